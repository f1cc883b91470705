"""The policy model and the backend that serves it: the options `amcs generate` and `amcs eval`
share (a recipe's keys, their flags, the library's arguments), and how a config opens its backend
and turns a question into the policy's prompt."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from amcs.backends.base import Backend
from amcs.fields import option
from amcs.prompts import DEFAULT_SYSTEM_PROMPT

CHAT_CHOICE = {"auto": None, "chat": True, "plain": False}


@dataclass(frozen=True)
class PolicyConfig:
    """Which policy, served by which backend, prompted how. A command's config adds its own
    fields (:class:`amcs.generation.GenerateConfig`, :class:`amcs.evaluation.EvalConfig`)."""

    backend: str = option(
        "hf",
        "hf (transformers in process), sglang (SGLang's engine in process; CUDA, pip install "
        "'amcs-prm[sglang]'), sglang-http (SGLang /generate) or openai (/v1/completions)",
    )
    model: str | None = option(
        None,
        "policy model path or hub id; for sglang-http/openai the tokenizer path, and for openai "
        "also the served model name [default: the bundled tiny arithmetic policy]",
    )
    url: list[str] | None = option(
        None,
        "server URL for sglang-http/openai, e.g. http://127.0.0.1:30000; repeat it for several "
        "SGLang servers (round robin)",
    )
    prompt_format: str = option(
        "auto",
        "chat uses the tokenizer's chat template (instruct models), plain the question and a "
        "blank line (base models); auto: chat when the tokenizer has one",
        choices=("auto", "chat", "plain"),
    )
    system_prompt: str = option(DEFAULT_SYSTEM_PROMPT, "system prompt for chat prompts")
    served_model_name: str | None = option(
        None,
        "openai: the name the server serves the model under (vLLM's --served-model-name) "
        "[default: the only model the server serves, else --model]",
    )
    backend_options: dict | None = option(
        None, "a mapping passed to the backend's constructor (recipe only)"
    )
    max_batch_size: int = option(128, "hf backend: sequences decoded together", min=1)
    deterministic: bool | None = option(
        None,
        "hf backend: decode so that a seeded rollout does not depend on which rollouts share its "
        "batch, so a resumed or sharded run writes the same bytes as an uninterrupted one (on "
        "CPU it costs little: see the docs, generate page). Off: plain batched kernels; a resumed run is then a "
        "valid continuation, not a byte-identical one. Server backends batch as they please. "
        "[default: on with hf on CPU]",
    )

    def __post_init__(self) -> None:
        if isinstance(self.url, str):
            object.__setattr__(self, "url", [self.url])

    @property
    def model_path(self) -> str:
        """The model to load: the one given, or the bundled tiny policy's directory."""
        from amcs.assets import TINY_POLICY

        return str(self.model or TINY_POLICY)

    @property
    def model_name(self) -> str:
        """The policy as outputs record it: the model given, or the bundled tiny policy's name."""
        from amcs.assets import TINY_POLICY_NAME

        return str(self.model) if self.model else TINY_POLICY_NAME

    def prompt_function(self) -> Callable[[Any, str], list[int]]:
        """prompt(tokenizer, question) -> ids: the chat template or the plain prompt, as
        ``prompt_format`` asks."""
        from amcs.prompts import prompt_ids

        chat = CHAT_CHOICE[self.prompt_format]
        system_prompt = self.system_prompt

        def prompt(tokenizer, question: str) -> list[int]:
            return prompt_ids(tokenizer, question, system_prompt=system_prompt, chat=chat)

        return prompt

    async def open_backend(self) -> Backend:
        """The backend this config names, made with :func:`amcs.backends.make_backend` and
        started (a server backend checks its servers)."""
        from amcs.backends import BACKENDS, make_backend

        spec = BACKENDS.entry(self.backend)
        options: dict[str, Any] = {}
        if spec.needs_url:
            options["urls"] = list(self.url or [])
        for name, keyword in spec.options.items():  # the config fields it takes (its traits)
            value = getattr(self, name)
            if value is not None and value != "":
                options[keyword] = value
        options |= self.backend_options or {}
        backend = make_backend(self.backend, os.path.expanduser(self.model_path), **options)
        start = getattr(backend, "start", None)
        if start is not None:
            try:
                await start()
            except BaseException:
                await backend.aclose()
                raise
        return backend


# What a stage takes as its backend: an open one (the caller closes it), an async function that
# opens one, or None: the one the config names.
BackendSource = Backend | Callable[[], Awaitable[Backend]] | None


async def open_given(source: BackendSource, policy: PolicyConfig) -> Backend:
    """The backend ``source`` gives (see :data:`BackendSource`); the stage closes it at the end
    unless it is ``source`` itself."""
    if source is None:
        return await policy.open_backend()
    return await source() if callable(source) else source
