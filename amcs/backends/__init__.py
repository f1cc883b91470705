"""Generation engines behind one protocol (amcs.backends.base.Backend), by name
(amcs.backends.registry: each backend's traits, and how to add one)."""

from __future__ import annotations

from typing import Any

from amcs.backends.base import (
    Backend,
    BackendConfigError,
    BackendUnavailableError,
    Rollout,
    SamplingParams,
)
from amcs.backends.registry import BACKENDS, BackendSpec, register_backend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendConfigError",
    "BackendSpec",
    "BackendUnavailableError",
    "Rollout",
    "SamplingParams",
    "make_backend",
    "register_backend",
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
    it. A backend that needs servers takes `urls` (a list, or one URL) or `url`."""
    spec = BACKENDS.entry(name)
    served_model = options.pop("served_model", None)
    if served_model is not None:
        if not spec.takes("served_model"):
            takers = [n for n, s in BACKENDS.items() if s.takes("served_model")]
            raise ValueError(
                "a served model name (--served-model-name) is for the "
                f"{' or '.join(takers)} backend, not {name}"
            )
        options["served_model"] = served_model
    if spec.needs_url:
        urls = options.pop("urls", None) or options.pop("url", None)
        urls = [urls] if isinstance(urls, str) else list(urls or [])
        if not urls:
            raise ValueError(f"the {name} backend needs a server URL (--url)")
        if spec.one_url and len(urls) != 1:
            raise ValueError(f"the {name} backend takes exactly one --url")
        options["urls"] = urls
    return spec.build(model, options)
