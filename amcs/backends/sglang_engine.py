"""SGLang's offline engine (``sglang.Engine``) in this process: no server to launch.

Requests go to ``Engine.async_generate`` with the prompt's token ids, so they reach the engine
exactly and its radix cache reports ``cached_tokens``; the sampling parameters and the mapping of
its outputs are shared with the HTTP backend (amcs.backends.http). SGLang runs on CUDA only and
is the optional extra ``amcs-prm[sglang]``; it is imported when the engine is created.
"""

from __future__ import annotations

from typing import Any

from amcs.backends.base import Rollout, SamplingParams
from amcs.backends.http import (
    eos_ids,
    load_tokenizer,
    rollout_from_sglang,
    sglang_sampling_params,
)
from amcs.backends.registry import SGLANG_INSTALL_HINT as INSTALL_HINT


class SGLangEngineBackend:
    """``sglang.Engine(model_path=..., tp_size=..., dp_size=..., ...)`` behind the Backend protocol.

    ``mem_fraction_static`` (weights plus KV cache, as a fraction of GPU memory) and
    ``context_length`` are left to SGLang when None; ``engine_kwargs`` go to ``sglang.Engine``
    as they are (any ServerArgs field, e.g. ``schedule_policy="lpm"``). ``engine`` is an already
    built engine, or anything with the same ``async_generate`` and ``shutdown`` (tests).
    """

    def __init__(
        self,
        model_path: str,
        *,
        tp_size: int = 1,
        dp_size: int = 1,
        mem_fraction_static: float | None = None,
        context_length: int | None = None,
        engine: Any = None,
        tokenizer: Any = None,
        **engine_kwargs: Any,
    ) -> None:
        self.model_path = str(model_path)
        if engine is None:
            try:
                import sglang
            except ImportError as exc:
                raise ImportError(INSTALL_HINT) from exc
            kwargs: dict[str, Any] = {"tp_size": int(tp_size), "dp_size": int(dp_size)}
            if mem_fraction_static is not None:
                kwargs["mem_fraction_static"] = float(mem_fraction_static)
            if context_length is not None:
                kwargs["context_length"] = int(context_length)
            engine = sglang.Engine(model_path=self.model_path, **kwargs, **engine_kwargs)
        self.engine = engine
        self.tokenizer = load_tokenizer(tokenizer if tokenizer is not None else self.model_path)
        self._eos = eos_ids(self.tokenizer)

    async def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Rollout]:
        if n < 1:
            return []
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        if self.engine is None:
            raise RuntimeError("the sglang engine is shut down")
        out = await self.engine.async_generate(
            input_ids=list(prompt_ids),
            sampling_params=sglang_sampling_params(n, params),
            return_logprob=True,
        )
        outs = out if isinstance(out, list) else [out]  # a dict when n == 1
        if len(outs) != n:
            raise RuntimeError(f"sglang engine returned {len(outs)} outputs, asked for {n}")
        return [rollout_from_sglang(o, self._eos) for o in outs]

    async def aclose(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.shutdown()
