"""The backends by name, with the traits the command line checks before any model loads.

A :class:`BackendSpec` says how to build the backend (``build(model, options)``, importing its
module only then) and what a command must know without knowing its name:

- ``needs_url``: it talks to servers, given as ``urls`` (``--url``); ``one_url``: exactly one;
- ``in_process``: it loads the model itself (a ``--model`` that looks like a path must exist);
- ``options``: the command options it takes, as option name -> constructor keyword
  (``max_batch_size``, ``deterministic`` for hf; ``served_model_name`` -> ``served_model`` for
  openai); other backends never see them;
- ``package`` / ``install_hint``: an optional package it needs, and the line that says how to
  install it.

A new backend is one module (a class with the amcs.backends.base.Backend protocol) plus one
:func:`register_backend` line.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from amcs.registry import Registry

SGLANG_INSTALL_HINT = "the sglang backend needs SGLang: pip install 'amcs-prm[sglang]' (CUDA only)"


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend: how to build it, and its traits (module docstring)."""

    build: Callable[[str, dict[str, Any]], Any]
    needs_url: bool = False
    one_url: bool = False
    in_process: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    package: str | None = None
    install_hint: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def takes(self, keyword: str) -> bool:
        """Whether the constructor takes the keyword ``keyword`` from a command option."""
        return keyword in self.options.values()

    def missing_package(self) -> str | None:
        """The install hint when the optional package it needs is not installed, else None."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return self.install_hint or f"this backend needs the package {self.package}"
        return None


BACKENDS: Registry[BackendSpec] = Registry("backend")


def register_backend(name: str, build: Callable[[str, dict[str, Any]], Any], **traits: Any):
    """Register ``build(model, options) -> Backend`` under ``name`` with its traits
    (BackendSpec's fields; ``replace=True`` overrides an entry)."""
    replace = traits.pop("replace", False)
    return BACKENDS.register(name, BackendSpec(build, **traits), replace=replace)


def _constructor(path: str) -> Callable:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _hf(model: str, options: dict[str, Any]):
    return _constructor("amcs.backends.hf:HFBackend")(model, **options)


def _sglang(model: str, options: dict[str, Any]):
    return _constructor("amcs.backends.sglang_engine:SGLangEngineBackend")(model, **options)


def _sglang_http(model: str, options: dict[str, Any]):
    urls = options.pop("urls")
    tokenizer = options.pop("tokenizer", None) or model
    return _constructor("amcs.backends.http:SGLangHTTPBackend")(urls, tokenizer, **options)


def _openai(model: str, options: dict[str, Any]):
    (url,) = options.pop("urls")
    tokenizer = options.pop("tokenizer", None) or model
    return _constructor("amcs.backends.http:OpenAICompletionsBackend")(
        url, model, tokenizer, **options
    )


register_backend(
    "hf",
    _hf,
    in_process=True,
    options={"max_batch_size": "max_batch_size", "deterministic": "deterministic"},
)
register_backend(
    "sglang", _sglang, in_process=True, package="sglang", install_hint=SGLANG_INSTALL_HINT
)
register_backend("sglang-http", _sglang_http, needs_url=True)
register_backend(
    "openai",
    _openai,
    needs_url=True,
    one_url=True,
    options={"served_model_name": "served_model"},
)
