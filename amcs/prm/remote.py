"""A PRM served by vLLM, scored over HTTP: the scorer ``--prm http://host:port`` names.

vLLM serves the token-classification PRMs ``amcs train`` writes (``LlamaForTokenClassification``,
``Qwen2ForTokenClassification``, ... with 2 labels) as they are: its pooling runner converts the
causal LM into a classifier with the checkpoint's ``score`` head, and the ``token_classify`` task
returns softmax(score(h_t)) for every token t of a prompt::

    vllm serve amcs-prm --runner pooling        # (`--runner pooling` is vLLM's default for them)

:class:`ServedPRMScorer` builds each sequence exactly as the in-process scorer does
(:func:`amcs.training.tokenize.tokenize_prm_row`: prompt ids, then the ids of ``step +
separator`` per step, with the PRM's own tokenizer), sends the token ids to ``POST /pooling``
(``task: token_classify``) and reads each step's score at the last token of ``step +
separator``::

    score_i = P(correct | tokens <= p_i) = softmax(W h_{p_i} + b)[1]

the value :class:`amcs.prm.PRMScorer` computes with transformers (to float tolerance). A server
that pools only step-tag positions (``--pooler-config '{"tok_pooling_type": "STEP",
"step_tag_id": ...}'``) answers one row per step, which is taken as it is.

The PRM's tokenizer and ``amcs_prm.json`` (its separator) are read from the served model's
``root`` that ``/v1/models`` reports (the path or hub id vLLM was started with), or from
``tokenizer`` when the server runs elsewhere.

Batching: concurrent :meth:`ServedPRMScorer.score` calls are queued and sent together, up to
``max_batch_size`` sequences per request and ``max_inflight`` requests at once (while all are in
flight, the queue grows into the next request). Patience: a request the server does not answer
(unreachable, 5xx, a timeout) is sent again after a capped exponential backoff; after
``patience`` seconds without an answer it fails with :class:`BackendUnavailableError` naming the
URL. Errors are the generation backends' kinds (:mod:`amcs.backends.http`): a 4xx about the
setup (unknown model, not a pooling model, missing key) is :class:`BackendConfigError` at once,
a sequence longer than the served context is :class:`PromptTooLongError`. No error is ever
turned into a score.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx

from amcs.backends.base import BackendConfigError, BackendUnavailableError, PromptTooLongError
from amcs.backends.http import error_message, http_error, post_json
from amcs.prm.checkpoint import PRM_CONFIG_FILE, load_prm_config
from amcs.redaction import redact, remember_secret
from amcs.steps import DEFAULT_SEPARATOR
from amcs.training.tokenize import IGNORE_INDEX, tokenize_prm_row

log = logging.getLogger("amcs.prm.remote")
# The one PRM input format scored over the network (vLLM's token_classify pooling task).
SERVED_FORMAT = "token-cls"

URL_PREFIXES = ("http://", "https://")
POOLING_TASK = "token_classify"


def is_url(spec: str | None) -> bool:
    """Whether a scorer name is a server URL (``http://`` or ``https://``)."""
    return bool(spec) and spec.startswith(URL_PREFIXES)


@dataclass(eq=False)
class _Pending:
    ids: list[int]
    positions: list[int]
    future: asyncio.Future | None


class ServedPRMScorer:
    """Scores steps with a token-classification PRM that vLLM serves (module docstring).

    ``calls`` counts the (question, steps) sequences scored and ``requests`` the ``/pooling``
    requests that answered them; ``retries`` the requests sent again after a failure.
    """

    def __init__(
        self,
        url: str,
        *,
        served_model: str | None = None,
        tokenizer: str | Path | None = None,
        separator: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_batch_size: int = 32,
        max_inflight: int = 4,
        timeout: float = 600,
        patience: float = 600,
        backoff: float = 0.5,
        max_backoff: float = 30,
    ) -> None:
        if max_batch_size < 1 or max_inflight < 1:
            raise ValueError("max_batch_size and max_inflight must be at least 1")
        self.url = url.rstrip("/")
        self.max_batch_size = max_batch_size
        self.max_inflight = max_inflight
        self.timeout = timeout
        self.patience = patience
        self.backoff = backoff
        self.max_backoff = max_backoff
        key = os.environ.get(api_key_env) if api_key_env else None
        remember_secret(key)  # never in a message, whatever the server echoes
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        entry = self._served_entry(served_model)
        self.served_model: str = entry["id"]
        mml = entry.get("max_model_len")
        self.max_model_len = mml if isinstance(mml, int) and mml > 0 else None
        try:
            self.checkpoint = self._checkpoint(tokenizer, entry)
        except ValueError as exc:
            missing: ValueError | None = exc  # reported after the probe: it says more
        else:
            missing = None
            self._check_format()  # a PRM of another input format is named as such
        self._check_pooling()
        if missing is not None:
            raise missing
        self.tokenizer = _load_tokenizer(self.checkpoint)
        self.separator = separator if separator is not None else self._trained_separator()
        self.calls = 0
        self.requests = 0
        self.retries = 0
        self._pending: deque[_Pending] = deque()
        self._pump: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self._gate: asyncio.Semaphore | None = None
        self._sending: set[asyncio.Task] = set()
        self._closed = False

    # --- what the server serves ----------------------------------------------------------------

    def _served_entry(self, served_model: str | None) -> dict:
        """The ``/v1/models`` entry to score with: ``served_model``, else the only one served."""
        models_url = f"{self.url}/v1/models"
        try:
            resp = httpx.get(models_url, headers=self._headers, timeout=30)
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                redact(f"cannot reach the PRM server at {self.url}: {type(exc).__name__}: {exc}")
            ) from exc
        if resp.status_code >= 400:
            raise http_error(resp.status_code, error_message(resp), models_url)
        try:
            data = resp.json()["data"]
            served = {m["id"]: m for m in data if isinstance(m, dict) and m.get("id")}
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendConfigError(
                redact(f"{models_url} did not answer with a model list: {resp.text[:200]}")
            ) from exc
        names = ", ".join(repr(n) for n in served) or "nothing"
        if served_model is not None:
            if served_model not in served:
                raise BackendConfigError(
                    redact(f"{self.url} does not serve {served_model!r}; it serves {names}")
                )
            return served[served_model]
        if len({m.get("root") or m["id"] for m in served.values()}) == 1:
            return next(iter(served.values()))  # one model under one or more names
        raise BackendConfigError(
            redact(f"{self.url} serves {names}: name the PRM to score with (served_model)")
        )

    def _checkpoint(self, tokenizer: str | Path | None, entry: dict) -> str:
        """Where the PRM's tokenizer (and amcs_prm.json) are read: ``tokenizer`` when given,
        else the served model's ``root`` (what vLLM was started with)."""
        from amcs.hub import resolve_checkpoint

        where = tokenizer if tokenizer is not None else entry.get("root") or entry["id"]
        try:
            return str(resolve_checkpoint(where, "PRM tokenizer"))
        except ValueError as exc:
            raise ValueError(
                f"{self.url} serves {self.served_model!r} from {where}, which is not here: "
                f"{exc} (give the PRM's directory or hub id as the tokenizer)"
            ) from None

    def _check_pooling(self) -> None:
        """One small ``/pooling`` request, so that a server that is not a 2-label token
        classifier is reported now, not after the first solutions are written (one token, id
        0, which every vocabulary has)."""
        ids, positions = [0], [0]
        url = f"{self.url}/pooling"
        try:
            resp = httpx.post(url, json=self._body([ids]), headers=self._headers, timeout=60)
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                redact(f"cannot reach the PRM server at {url}: {type(exc).__name__}: {exc}")
            ) from exc
        if resp.status_code >= 400:
            exc = http_error(resp.status_code, error_message(resp), url)
            raise self._config_error(exc) if isinstance(exc, BackendConfigError) else exc
        try:
            rows = [r["data"] for r in resp.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendConfigError(redact(f"{url} answered {resp.text[:200]}")) from exc
        result = self._step_scores(_Pending(ids, positions, None), rows[0] if rows else None)
        if isinstance(result, Exception):
            raise result

    def _body(self, inputs: list[list[int]]) -> dict:
        return {
            "model": self.served_model,
            "input": inputs,
            "task": POOLING_TASK,
            "add_special_tokens": False,  # the ids are complete, BOS included
            "use_activation": True,  # softmax over the 2 labels
        }

    def _check_format(self) -> None:
        """Refuse a checkpoint of another PRM input format: its inputs are built otherwise (a
        step tag, ``<extra_0>``), so scoring it as a token classifier would give wrong scores,
        not an error."""
        from amcs.prm.registry import detect_prm_format

        try:
            found = detect_prm_format(self.checkpoint)
        except ValueError:
            return  # no format's signs: the pooling probe decides whether it is a classifier
        if found != SERVED_FORMAT:
            raise ValueError(
                f"{self.checkpoint} is a {found} PRM: amcs scores only {SERVED_FORMAT} PRMs "
                "served by vLLM; score it in process (--prm DIR)"
            )

    def _trained_separator(self) -> str:
        """The separator in the checkpoint's amcs_prm.json; refuses a policy-features PRM, whose
        step head reads the policy's probabilities, which vLLM's classifier cannot compute."""
        path = Path(self.checkpoint) / PRM_CONFIG_FILE
        if not path.is_file():
            return DEFAULT_SEPARATOR
        settings = load_prm_config(self.checkpoint)
        if settings.get("policy_features"):
            raise ValueError(
                f"{self.checkpoint} is a policy-features PRM (amcs train --set "
                "policy_features=true): vLLM cannot serve its step head; score it in process"
            )
        return settings.get("separator", DEFAULT_SEPARATOR)

    # --- inputs ----------------------------------------------------------------------------------

    def encode(self, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """Token ids of one sequence and the position of each step's score, as in training."""
        row = {"prompt": question, "completions": list(steps), "labels": [True] * len(steps)}
        feat = tokenize_prm_row(row, self.tokenizer, self.separator, max_length=None)
        ids = feat["input_ids"]
        positions = [i for i, label in enumerate(feat["labels"]) if label != IGNORE_INDEX]
        if self.max_model_len is not None and len(ids) > self.max_model_len:
            raise PromptTooLongError(
                f"a solution of {len(steps)} steps is {len(ids)} tokens long, more than the "
                f"{self.max_model_len} tokens {self.url} serves {self.served_model!r} with; "
                "shorten it (steps are never dropped)"
            )
        return ids, positions

    # --- scoring ---------------------------------------------------------------------------------

    async def score(self, question: str, steps: list[str]) -> list[float]:
        """P(step correct) for each step; concurrent calls share requests."""
        if self._closed:
            raise RuntimeError("PRM scorer is closed")
        steps = list(steps)
        if not steps:
            self.calls += 1
            return []
        ids, positions = self.encode(question, steps)
        pending = _Pending(ids, positions, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._send_pending())
        scores = await pending.future
        self.calls += 1
        return scores

    def score_batch(self, items: list[tuple[str, list[str]]]) -> list[list[float]]:
        """P(step correct) for every step of every (question, steps) item, in order (blocking;
        not from a running event loop)."""

        async def run() -> list[list[float]]:
            try:
                return list(await asyncio.gather(*(self.score(q, s) for q, s in items)))
            finally:
                await self._close_client()

        return asyncio.run(run())

    async def _send_pending(self) -> None:
        """Send the queue in requests of up to max_batch_size sequences, max_inflight at once."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(30.0, self.timeout))
            )
            self._gate = asyncio.Semaphore(self.max_inflight)
        assert self._gate is not None
        while self._pending:
            await self._gate.acquire()
            batch = []
            while self._pending and len(batch) < self.max_batch_size:
                item = self._pending.popleft()
                if not item.future.cancelled():
                    batch.append(item)
            if not batch:
                self._gate.release()
                continue
            task = asyncio.create_task(self._answer(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _answer(self, batch: list[_Pending]) -> None:
        """One request for ``batch``; every caller gets its scores or the request's error."""
        assert self._gate is not None
        try:
            rows = await self._request([item.ids for item in batch])
            results = [self._step_scores(item, row) for item, row in zip(batch, rows, strict=True)]
        except Exception as exc:  # noqa: BLE001 - every caller in the batch gets it
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        else:
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        finally:
            self._gate.release()

    async def _request(self, inputs: list[list[int]]) -> list:
        """``POST /pooling`` with patience: unreachable / 5xx / broken answers are sent again
        after a capped backoff until ``patience`` seconds pass without an answer."""
        assert self._client is not None
        url = f"{self.url}/pooling"
        body = self._body(inputs)
        first_failure: float | None = None
        delay = self.backoff
        while True:
            try:
                data = await post_json(self._client, url, body, self._headers, "PRM server")
            except ConnectionError as exc:  # unreachable, 5xx, a broken answer
                now = time.monotonic()
                first_failure = first_failure if first_failure is not None else now
                if now - first_failure >= self.patience:
                    raise BackendUnavailableError(
                        redact(
                            f"the PRM server at {self.url} has not answered for "
                            f"{self.patience:.0f} s (last error: {exc})"
                        )
                    ) from exc
                self.retries += 1
                log.warning("PRM request failed (%s); retry in %.1f s", exc, delay)
                await asyncio.sleep(min(delay, self.patience - (now - first_failure) + 0.01))
                delay = min(self.max_backoff, delay * 2)
                continue
            except BackendConfigError as exc:
                raise self._config_error(exc) from None
            self.requests += 1
            rows = data.get("data") if isinstance(data, dict) else None
            if not isinstance(rows, list) or len(rows) != len(inputs):
                raise BackendConfigError(
                    redact(f"{url} answered {str(data)[:200]} for {len(inputs)} inputs")
                )
            rows = sorted(rows, key=lambda r: r.get("index", 0) if isinstance(r, dict) else 0)
            return [r.get("data") if isinstance(r, dict) else None for r in rows]

    def _config_error(self, exc: BackendConfigError) -> BackendConfigError:
        """A 4xx of /pooling, with what to do when the server is not a token classifier."""
        text = str(exc)
        if "HTTP 404" in text or "task" in text.lower():
            return BackendConfigError(
                f"{text}: {self.url} serves {self.served_model!r}, which is not a "
                "token-classification pooling model; serve a PRM that amcs train wrote with "
                "`vllm serve PRM_DIR --runner pooling`"
            )
        return exc

    def _step_scores(self, item: _Pending, rows) -> list[float] | Exception:
        """Each step's P(correct) from one answer: a [p_wrong, p_correct] row per token (ALL
        pooling; the steps' positions are picked) or per step (STEP pooling)."""
        n_steps = len(item.positions)
        if isinstance(rows, list) and len(rows) == len(item.ids):
            picked = [rows[p] for p in item.positions]
        elif isinstance(rows, list) and len(rows) == n_steps:
            picked = rows
        else:
            size = len(rows) if isinstance(rows, list) else type(rows).__name__
            return BackendConfigError(
                f"{self.url}/pooling answered {size} rows for a sequence of {len(item.ids)} "
                f"tokens and {n_steps} steps: serve the PRM with token-wise pooling (ALL, or STEP "
                "at the step's last token)"
            )
        scores = []
        for row in picked:
            ok = (
                isinstance(row, list)
                and len(row) == 2
                and all(isinstance(p, int | float) and math.isfinite(p) for p in row)
                and abs(sum(row) - 1) < 1e-3
            )
            if not ok:
                return BackendConfigError(
                    f"{self.url}/pooling answered {str(row)[:80]} for a step, not the 2 "
                    "probabilities [wrong, correct] of a 2-label PRM"
                )
            scores.append(float(row[1]))
        return scores

    async def _close_client(self) -> None:
        """Stop sending and close the connections; calls still waiting fail."""
        for task in list(self._sending):
            task.cancel()
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        closed = RuntimeError("PRM scorer closed")
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(closed)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def aclose(self) -> None:
        """Close the connections; later calls fail with RuntimeError."""
        self._closed = True
        await self._close_client()


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_served_prm(url: str, *, max_batch_size: int = 32, **kwargs) -> ServedPRMScorer:
    """:class:`ServedPRMScorer` for ``url``, or a :class:`ScorerError` naming the URL (server
    down, not a PRM, tokenizer not found) in one line."""
    from amcs.prm.names import ScorerError

    try:
        return ServedPRMScorer(url, max_batch_size=max_batch_size, **kwargs)
    except (OSError, ValueError, BackendConfigError) as exc:
        raise ScorerError(f"cannot score with the PRM served at {url}: {exc}") from None
