"""Generation engines behind one protocol (amcs.backends.base.Backend)."""

from __future__ import annotations

from typing import Any

from amcs.backends.base import Backend, Rollout, SamplingParams

BACKENDS = ("hf",)

__all__ = ["BACKENDS", "Backend", "Rollout", "SamplingParams", "make_backend"]


def make_backend(name: str, model: str, **options: Any) -> Backend:
    """Create a backend by name; options are passed to its constructor."""
    if name == "hf":
        from amcs.backends.hf import HFBackend

        return HFBackend(model, **options)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
