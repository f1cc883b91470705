"""Backends that talk to a running inference server over HTTP; no engine is imported.

``SGLangHTTPBackend`` uses SGLang's native ``POST /generate`` with ``input_ids`` (one URL, several
URLs in round robin, or a sglang-router URL), so the prompt's token ids reach the engine exactly
and its radix cache reports ``cached_tokens``. ``OpenAICompletionsBackend`` uses the
OpenAI-compatible ``POST /v1/completions`` (vLLM, SGLang, llama.cpp) with the prompt as a list of
token ids.

Errors, for the engine to act on (every message names the server's URL):

- ``BackendUnavailableError``: the server cannot be reached, dropped the connection, timed out, or
  answered 502 / 503 / 504 (also 408 / 429, and a router's 500 saying it cannot reach a worker):
  it is down or not ready; the engine waits for it.
- ``BackendConfigError``: a 4xx about the run's configuration, not this prompt (an unknown model
  404, a parameter the server refuses 400 / 422, a missing API key 401 / 403): every request
  would fail the same way; the engine stops the run with the message.
- ``ValueError``: a 4xx about this prompt (it does not fit the model's context): the problem fails.
- ``ConnectionError``: any other 5xx, or an answer that is not what was asked for: retried.

Every message built from what a server sent (its error body, a broken answer, an httpx error) goes
through ``amcs.redaction.redact``: a server or proxy that echoes the request would otherwise put
the API key of the ``Authorization`` header into stderr, the meta file and the view page.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from pathlib import Path
from typing import Any

import httpx
from transformers import AutoTokenizer

from amcs.backends.base import (
    BackendConfigError,
    BackendUnavailableError,
    PromptTooLongError,
    Rollout,
    SamplingParams,
)
from amcs.redaction import redact, remember_secret

# httpx logs one INFO line per request; a run makes hundreds of thousands.
logging.getLogger("httpx").setLevel(logging.WARNING)

# What servers say when the prompt itself does not fit the context (vLLM, SGLang): the problem
# fails, the run goes on. Any other 400 / 422 is about the configuration.
_PROMPT_TOO_LONG = re.compile(
    r"(prompt|input)\b[^.]{0,80}\b(longer than|too long|exceeds|greater than)"
    r"|maximum context length is \d+ tokens"
    r"|context length[^.]{0,40}exceed",
    re.IGNORECASE,
)
_UNAVAILABLE_STATUS = {408, 429, 502, 503, 504}
# sglang-router answers HTTP 500 when it cannot reach a worker: the fleet is down, not broken.
_UPSTREAM_DOWN = re.compile(
    r"error sending request|no (available|healthy) workers?|connection refused", re.IGNORECASE
)
_TOO_LARGE_STATUS = {413}


def load_tokenizer(tokenizer):
    if isinstance(tokenizer, str | Path):
        return AutoTokenizer.from_pretrained(tokenizer)
    return tokenizer


def error_message(resp: httpx.Response) -> str:
    """The server's own words for a failed request, secrets redacted: the ``message`` of an
    OpenAI-style error (``{"error": {"message"}}`` or ``{"message"}``), else the body's start."""
    return redact(_server_words(resp))


def _server_words(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:1000].strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:1000]
        if isinstance(err, str):
            return err[:1000]
        if isinstance(data.get("detail"), str):
            return data["detail"][:1000]
    return resp.text[:1000].strip()


def http_error(status: int, message: str, url: str) -> Exception:
    """The exception for an HTTP error answer, by the module docstring's rules."""
    what = redact(f"{url} answered HTTP {status}: {message}")
    if status in _UNAVAILABLE_STATUS or (status >= 500 and _UPSTREAM_DOWN.search(message)):
        return BackendUnavailableError(f"{what} (the server is not ready or overloaded)")
    if status in _TOO_LARGE_STATUS or (status in (400, 422) and _PROMPT_TOO_LONG.search(message)):
        return PromptTooLongError(what)
    if 400 <= status < 500:
        return BackendConfigError(what)
    return ConnectionError(what)


async def post_json(
    client: httpx.AsyncClient, url: str, body: dict, headers=None, server: str = "server"
) -> Any:
    """POST JSON and return the decoded answer, mapping failures as the module docstring says."""
    try:
        resp = await client.post(url, json=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise BackendUnavailableError(redact(f"request to {url} timed out: {exc!r}")) from exc
    except httpx.TransportError as exc:
        raise BackendUnavailableError(redact(f"cannot reach {server} at {url}: {exc!r}")) from exc
    if resp.status_code >= 400:
        raise http_error(resp.status_code, error_message(resp), url)
    try:
        return resp.json()
    except ValueError as exc:  # a broken answer is transient, not a bad request
        raise ConnectionError(
            redact(f"{url} sent a response that is not JSON: {resp.text[:200]}")
        ) from exc


def eos_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    return ids


def sglang_sampling_params(n: int, params: SamplingParams) -> dict[str, Any]:
    """SGLang's ``sampling_params`` for ``n`` rollouts, the same over HTTP and in process."""
    sp: dict[str, Any] = {
        "n": n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "max_new_tokens": params.max_new_tokens,
        "stop": list(params.stop),
        "no_stop_trim": True,  # stop strings stay in the text and token ids
    }
    if params.seed is not None:
        sp["sampling_seed"] = params.seed
    return sp


def rollout_from_sglang(out: dict, eos_ids: set[int]) -> Rollout:
    """One SGLang generate output (``text``, ``output_ids``, ``meta_info``), the same over HTTP
    and from the in-process engine, as a Rollout; ``return_logprob`` must have been set."""
    meta = out.get("meta_info") or {}
    fr = meta.get("finish_reason") or {}
    kind = fr.get("type") if isinstance(fr, dict) else str(fr)
    ids = list(out.get("output_ids") or [])
    lps = [float(x[0]) for x in meta.get("output_token_logprobs") or [] if x[0] is not None]
    # Rollout token ids exclude the end-of-sequence token; SGLang may include it.
    matched = fr.get("matched") if isinstance(fr, dict) else None
    if kind == "stop" and ids and (ids[-1] == matched or ids[-1] in eos_ids):
        if len(lps) == len(ids):
            lps = lps[:-1]
        ids = ids[:-1]
    return Rollout(
        token_ids=ids,
        text=out.get("text", ""),
        logprob_sum=sum(lps),
        finish_reason="length" if kind == "length" else "stop",
        cached_tokens=int(meta.get("cached_tokens") or 0),
    )


class _StartedOnce:
    """What the server backends share: ``start()`` runs ``_open()`` once, however many callers
    start at the same time; ``aclose()`` closes the connection pool, and a later ``start()``
    opens it again."""

    _client: httpx.AsyncClient | None = None
    _started = False
    _start_lock: asyncio.Lock | None = None

    async def _open(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            await self._open()
            self._started = True

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._started = False


class SGLangHTTPBackend(_StartedOnce):
    """SGLang's native ``/generate`` API on one or more servers.

    Requests go round robin over ``urls``, at most ``max_inflight_per_server`` at once per server.
    ``start()`` checks ``/health`` and ``/server_info`` on every server; ``sample`` calls it on
    first use.
    """

    def __init__(
        self,
        urls: str | list[str],
        tokenizer,
        *,
        timeout: float = 600,
        max_inflight_per_server: int = 64,
    ) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError("sglang-http backend needs at least one server URL (--url)")
        self.urls = [u.rstrip("/") for u in urls]
        self.tokenizer = load_tokenizer(tokenizer)
        self.timeout = timeout
        self.max_inflight_per_server = max_inflight_per_server
        self.server_info: dict[str, Any] = {}
        self._client: httpx.AsyncClient | None = None
        self._gates: list[asyncio.Semaphore] = []
        self._next = itertools.count()
        self._eos = eos_ids(self.tokenizer)

    async def _open(self) -> None:
        """Open the connection pool and check that every server is up."""
        if self._client is None:
            n = self.max_inflight_per_server * len(self.urls)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(30.0, self.timeout)),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            )
        for url in self.urls:
            try:
                health = await self._client.get(f"{url}/health", timeout=30)
                info = await self._client.get(f"{url}/server_info", timeout=30)
                if info.status_code == 404:  # older SGLang releases
                    info = await self._client.get(f"{url}/get_server_info", timeout=30)
            except httpx.HTTPError as exc:
                raise BackendUnavailableError(
                    redact(f"cannot reach SGLang server at {url}: {type(exc).__name__}: {exc}")
                ) from exc
            if health.status_code != 200:
                raise BackendUnavailableError(
                    f"SGLang server at {url} is not healthy: /health answered HTTP "
                    f"{health.status_code}"
                )
            self.server_info[url] = info.json() if info.status_code == 200 else {}
        self._gates = [asyncio.Semaphore(self.max_inflight_per_server) for _ in self.urls]

    async def health(self) -> bool:
        """Whether some server answers ``/health`` with 200: the scheduler's probe while the
        servers are away (a router may say 200 before its workers are ready; the request that
        follows tells)."""
        try:
            await self.start()
        except (ConnectionError, RuntimeError):
            return False
        assert self._client is not None
        for url in self.urls:
            try:
                resp = await self._client.get(f"{url}/health", timeout=10)
            except httpx.HTTPError:
                continue
            if resp.status_code == 200:
                return True
        return False

    def _body(self, prompt_ids: list[int], n: int, params: SamplingParams) -> dict:
        return {
            "input_ids": list(prompt_ids),
            "sampling_params": sglang_sampling_params(n, params),
            "return_logprob": True,
        }

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        if n < 1:
            return []
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        await self.start()
        assert self._client is not None
        i = next(self._next) % len(self.urls)
        url = self.urls[i]
        async with self._gates[i]:
            data = await post_json(
                self._client,
                f"{url}/generate",
                self._body(prompt_ids, n, params),
                server="SGLang server",
            )
        outs = data if isinstance(data, list) else [data]
        if len(outs) != n:
            raise ConnectionError(f"{url}/generate returned {len(outs)} outputs, asked for {n}")
        return [rollout_from_sglang(o, self._eos) for o in outs]


class OpenAICompletionsBackend(_StartedOnce):
    """The OpenAI-compatible ``/v1/completions`` API with a token-id prompt.

    ``start()`` asks ``/v1/models`` what the server serves and picks the name to send:
    ``served_model`` when given (an alias such as vLLM's ``--served-model-name``), else the only
    served model, else ``model`` if it is served; otherwise BackendConfigError lists what is
    served. ``model`` is also the tokenizer path unless ``tokenizer`` is given. The context length
    the server reports (vLLM's ``max_model_len``) caps each request's ``max_tokens`` at what the
    prompt leaves, as the hf backend does with the model's positions; a prompt that fills the
    context raises ValueError.

    Token ids of a rollout come from ``logprobs.tokens``: vLLM is asked for its ``token_id:N``
    form (``return_tokens_as_token_ids``), which is exact; token strings of other servers are
    mapped with ``tokenizer.convert_tokens_to_ids``. Servers that return decoded text pieces
    instead of vocabulary tokens (so some piece does not map) fall back to re-encoding the text,
    which may tokenize differently from what the model sampled: prefer a server that returns
    tokens.

    Stop strings are kept in the text: ``include_stop_str_in_output`` is sent (vLLM, SGLang), and
    when the server still trims and says which stop it hit (``stop_reason``), it is appended.
    ``cached_tokens`` of every rollout is the request's ``usage.prompt_tokens_details
    .cached_tokens`` (vLLM reports it with ``--enable-prompt-tokens-details``).
    """

    def __init__(
        self,
        url: str,
        model: str,
        tokenizer=None,
        *,
        served_model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 600,
        extra_body: dict | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.served_model = served_model
        self.tokenizer = load_tokenizer(model if tokenizer is None else tokenizer)
        self.timeout = timeout
        self.extra_body = (
            {"include_stop_str_in_output": True} if extra_body is None else dict(extra_body)
        )
        key = os.environ.get(api_key_env) if api_key_env else None
        remember_secret(key)  # never in a message, whatever the server echoes
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client: httpx.AsyncClient | None = None
        self._eos = eos_ids(self.tokenizer)
        self.request_model: str | None = None  # the name sent, chosen at start()
        self.max_model_len: int | None = None  # the server's context length, when it says
        self.served: list[dict] = []  # /v1/models's entries

    async def _open(self) -> None:
        """Open the connection pool, ask ``/v1/models`` what is served and its context length."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(30.0, self.timeout))
            )
        models_url = f"{self.url}/v1/models"
        try:
            resp = await self._client.get(models_url, headers=self._headers, timeout=30)
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                redact(
                    f"cannot reach OpenAI-compatible server at {self.url}: "
                    f"{type(exc).__name__}: {exc}"
                )
            ) from exc
        if resp.status_code == 404:  # a server without the list: trust the name we have
            self.served = []
        elif resp.status_code >= 400:
            raise http_error(resp.status_code, error_message(resp), models_url)
        else:
            try:
                data = resp.json().get("data") or []
            except (ValueError, AttributeError) as exc:
                raise ConnectionError(
                    redact(
                        f"{models_url} sent a response that is not a model list: {resp.text[:200]}"
                    )
                ) from exc
            self.served = [m for m in data if isinstance(m, dict) and m.get("id")]
        entry = self._choose_model()
        self.request_model = entry["id"]
        mml = entry.get("max_model_len")
        self.max_model_len = int(mml) if isinstance(mml, int) and mml > 0 else None
        # vLLM returns exact token ids on request; other servers may refuse the field.
        if any(m.get("owned_by") == "vllm" for m in self.served):
            self.extra_body.setdefault("return_tokens_as_token_ids", True)

    async def health(self) -> bool:
        """Whether the server answers ``/v1/models``: the scheduler's probe while it is away."""
        try:
            await self.start()
        except (ConnectionError, RuntimeError):
            return False
        assert self._client is not None
        try:
            resp = await self._client.get(
                f"{self.url}/v1/models", headers=self._headers, timeout=10
            )
        except httpx.HTTPError:
            return False
        return resp.status_code < 500

    def _choose_model(self) -> dict:
        by_id = {m["id"]: m for m in self.served}
        if not by_id:
            return {"id": self.served_model or self.model}
        names = ", ".join(repr(n) for n in by_id)
        if self.served_model is not None:
            if self.served_model in by_id:
                return by_id[self.served_model]
            raise BackendConfigError(
                redact(
                    f"{self.url} does not serve a model named {self.served_model!r}; it serves "
                    f"{names}: pass one of them as the served model name (--served-model-name)"
                )
            )
        if len(by_id) == 1:
            return next(iter(by_id.values()))
        if self.model in by_id:
            return by_id[self.model]
        raise BackendConfigError(
            redact(
                f"{self.url} serves {names}, not {self.model!r}: pass the served model name "
                f"(--served-model-name)"
            )
        )

    def max_tokens(self, prompt_len: int, params: SamplingParams) -> int:
        """``max_new_tokens`` capped at what the server's context leaves after the prompt."""
        if self.max_model_len is None:
            return params.max_new_tokens
        room = self.max_model_len - prompt_len
        if room < 1:
            raise ValueError(
                f"prompt of {prompt_len} tokens leaves no room to generate "
                f"(the model's context at {self.url} is {self.max_model_len} tokens)"
            )
        return min(params.max_new_tokens, room)

    def _body(self, prompt_ids: list[int], n: int, params: SamplingParams) -> dict:
        body: dict[str, Any] = {
            "model": self.request_model or self.served_model or self.model,
            "prompt": list(prompt_ids),
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": self.max_tokens(len(prompt_ids), params),
            "stop": list(params.stop) or None,
            "logprobs": 1,
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k  # a vLLM / SGLang extension
        if params.seed is not None:
            body["seed"] = params.seed
        return body | self.extra_body

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        if n < 1:
            return []
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        await self.start()
        assert self._client is not None
        url = f"{self.url}/v1/completions"
        # Greedy decoding gives one answer; vLLM refuses n > 1 with temperature 0.
        ask = 1 if params.temperature == 0 else n
        body = self._body(prompt_ids, ask, params)
        data = await post_json(self._client, url, body, self._headers, "OpenAI-compatible server")
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != ask:
            raise ConnectionError(f"{url} returned {len(choices)} choices, asked for {ask}")
        usage = data.get("usage") or {}
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        return [self._rollout(choices[i % ask], params, cached) for i in range(n)]

    def _token_ids(self, tokens: list[str], text: str) -> list[int]:
        if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
            return [int(t.removeprefix("token_id:")) for t in tokens]
        unk = self.tokenizer.unk_token_id
        ids = self.tokenizer.convert_tokens_to_ids(tokens) if tokens else []
        if all(
            i is not None and (i != unk or t == self.tokenizer.unk_token)
            for i, t in zip(ids, tokens, strict=True)
        ):
            return list(ids)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _rollout(self, choice: dict, params: SamplingParams, cached: int) -> Rollout:
        text = choice.get("text") or ""
        finish = choice.get("finish_reason") or "stop"
        stop_reason = choice.get("stop_reason")
        lp = choice.get("logprobs") or {}
        tokens = list(lp.get("tokens") or [])
        lps = list(lp.get("token_logprobs") or [])
        ids = self._token_ids(tokens, text)
        if ids and len(ids) == len(lps) and finish == "stop" and ids[-1] in self._eos:
            ids, lps = ids[:-1], lps[:-1]
        if (
            finish == "stop"
            and isinstance(stop_reason, str)
            and stop_reason in params.stop
            and not text.endswith(stop_reason)
        ):
            text += stop_reason
            # vLLM trims the text but keeps the stop's tokens in logprobs.tokens.
            if not self.tokenizer.decode(ids).endswith(stop_reason):
                ids = ids + self.tokenizer(stop_reason, add_special_tokens=False)["input_ids"]
        return Rollout(
            token_ids=ids,
            text=text,
            logprob_sum=sum(float(x) for x in lps if x is not None),
            finish_reason="length" if finish == "length" else "stop",
            cached_tokens=cached,
        )
