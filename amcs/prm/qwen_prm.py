"""The ``qwen-prm`` PRM format: the Qwen2.5-Math-PRM layout.

A chat (system prompt, user = question, assistant = the steps each followed by ``"<extra_0>"``)
rendered with the tokenizer's chat template; the model returns (batch, seq, 2) logits and a
step's score is softmax(logits)[..., 1] at its ``"<extra_0>"`` token. Real checkpoints load with
remote code (``AutoModel`` + ``trust_remote_code``, when config.json has an ``auto_map``);
otherwise the checkpoint loads as ``AutoModelForTokenClassification``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForTokenClassification

from amcs.prm.format import CheckpointFiles, MarkerFormat, load_trained, read_model_config

QWEN_STEP_TOKEN = "<extra_0>"


class QwenPRM(MarkerFormat):
    name = "qwen-prm"
    marker_role = "step token"

    @property
    def marker(self) -> str:
        return QWEN_STEP_TOKEN

    @classmethod
    def detect(cls, files: CheckpointFiles) -> int:
        """2 (more specific than a plain 2-label token classifier) for a model with the step
        token and a ProcessRewardModel or 2-label token-classification architecture."""
        has_step_token = QWEN_STEP_TOKEN in files.tokenizer.get_vocab()
        reward_model = any("ProcessRewardModel" in a for a in files.architectures)
        return 2 if has_step_token and (reward_model or files.two_label_classifier) else 0

    @classmethod
    def clue(cls, files: CheckpointFiles) -> str:
        found = "present" if QWEN_STEP_TOKEN in files.tokenizer.get_vocab() else "absent"
        return f"{QWEN_STEP_TOKEN!r} token {found}"

    @classmethod
    def load(cls, path: Path, dtype: torch.dtype | None) -> tuple[torch.nn.Module, dict]:
        if (path / "config.json").is_file() and read_model_config(path).get("auto_map"):
            model = load_trained(AutoModel, path, cls.name, dtype=dtype, trust_remote_code=True)
        else:
            model = load_trained(AutoModelForTokenClassification, path, cls.name, dtype=dtype)
        return model, {}

    def token_ids(self, question: str, steps: list[str]) -> list[int]:
        messages = []
        if self.options.system_prompt is not None:
            messages.append({"role": "system", "content": self.options.system_prompt})
        messages.append({"role": "user", "content": question})
        content = "".join(step + QWEN_STEP_TOKEN for step in steps)
        messages.append({"role": "assistant", "content": content})
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
