"""Generation engines behind one protocol (amcs.backends.base.Backend)."""

from __future__ import annotations

from typing import Any

from amcs.backends.base import (
    Backend,
    BackendConfigError,
    BackendUnavailableError,
    Rollout,
    SamplingParams,
)

BACKENDS = ("hf", "sglang", "sglang-http", "openai")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendConfigError",
    "BackendUnavailableError",
    "Rollout",
    "SamplingParams",
    "make_backend",
]


def make_backend(name: str, model: str, **options: Any) -> Backend:
    """Create a backend by name; options are passed to its constructor.

    hf: `model` is the model path. sglang: SGLang's engine in process (CUDA only, the `sglang`
    extra); `model` is the model path, options tp_size, dp_size, mem_fraction_static,
    context_length (or any other sglang.Engine argument); ImportError without SGLang.
    sglang-http: `model` is the tokenizer path and option `urls` (a list) the servers.
    openai: `model` is the tokenizer path (or option `tokenizer`) and the model name to ask the
    server for, option `url` the server, option `served_model` the name the server serves the
    model under (vLLM's --served-model-name) when it serves several or `model` is not among them.
    `served_model=None` is accepted (and ignored) by every backend, so a caller may always pass
    it."""
    served_model = options.pop("served_model", None)
    if served_model is not None and name != "openai":
        raise ValueError(
            f"a served model name (--served-model-name) is for the openai backend, not {name}"
        )
    if name == "hf":
        from amcs.backends.hf import HFBackend

        return HFBackend(model, **options)
    if name == "sglang":
        from amcs.backends.sglang_engine import SGLangEngineBackend

        return SGLangEngineBackend(model, **options)
    if name == "sglang-http":
        from amcs.backends.http import SGLangHTTPBackend

        urls = options.pop("urls", None) or options.pop("url", None)
        if not urls:
            raise ValueError("the sglang-http backend needs a server URL (--url)")
        tokenizer = options.pop("tokenizer", None) or model
        return SGLangHTTPBackend(urls, tokenizer, **options)
    if name == "openai":
        from amcs.backends.http import OpenAICompletionsBackend

        urls = options.pop("urls", None) or options.pop("url", None)
        if isinstance(urls, list | tuple):
            if len(urls) != 1:
                raise ValueError("the openai backend takes exactly one --url")
            urls = urls[0]
        if not urls:
            raise ValueError("the openai backend needs a server URL (--url)")
        tokenizer = options.pop("tokenizer", None) or model
        return OpenAICompletionsBackend(
            urls, model, tokenizer, served_model=served_model, **options
        )
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
