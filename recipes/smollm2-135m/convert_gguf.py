"""Convert a GGUF checkpoint into a plain transformers model directory (float32 safetensors, the
tokenizer with its chat template, a generation config): what prepare_model.sh runs.

    uv run python recipes/smollm2-135m/convert_gguf.py MODEL.gguf OUT_DIR

transformers reads GGUF through the `gguf` package and de-quantizes the weights; the result keeps a
`quantization_config` naming the GGUF file, which is dropped so the directory loads as a normal
model (in transformers, vLLM and `amcs train`). The conversion is checked by loading the saved
directory back and comparing its next-token logits with the converted model's on a chat prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def convert(gguf_path: Path, out: Path) -> None:
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The de-quantized weights in a model built from the config without quantization_config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf_path.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.eval()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(eos, int) and eos != tokenizer.unk_token_id:
        # a chat model's turn ends at <|im_end|>: generation stops there
        model.generation_config.eos_token_id = eos
        model.config.eos_token_id = eos
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    # Check: the saved directory is the converted model.
    again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    ids = reloaded_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True
    )
    ids = torch.tensor([list(ids["input_ids"] if hasattr(ids, "keys") else ids)])
    with torch.no_grad():
        a, b = model(ids).logits[0, -1], again(ids).logits[0, -1]
    if not torch.equal(a, b):
        raise SystemExit(f"error: the saved model differs from the converted one ({out})")
    print(
        f"converted {gguf_path.name} -> {out} ({sum(p.numel() for p in again.parameters()):,} parameters)"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: convert_gguf.py MODEL.gguf OUT_DIR")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
