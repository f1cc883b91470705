"""Train the bundled tiny arithmetic policy from scratch with TRL's SFTTrainer.

    uv run python recipes/tiny-arith/train_policy.py --out amcs/assets/tiny-arith-policy

A ~1M-parameter Llama (hidden 128, 4 layers, tied embeddings) trained on reference solutions of
2-6 operation problems. It is meant to be a weak policy that makes real mistakes (wrong products,
wrong operands, skipped operations) so that step labels have something to find. The schedule is in
steps, not wall-clock time, so the result does not depend on the machine; on 2 idle CPU cores it
takes about 18 minutes. Where other processes compete for the cores, set OMP_WAIT_POLICY=PASSIVE:
spinning OpenMP threads otherwise make each step several times slower. The held-out evaluation set
(amcs.domains.arith.held_out_problems) is excluded from training; the rows are
amcs.assets.tiny_arith.policy_training_rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from datasets import Dataset
from tokenizer import build_tokenizer  # a sibling script: its folder is on the path when run
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from amcs.assets.tiny_arith import policy_training_rows


def main() -> None:
    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        sys.exit(
            "train_policy.py trains with TRL's SFTTrainer: install the recipes extra "
            "(uv sync --extra recipes, or pip install 'amcs-prm[recipes]')"
        )
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("amcs/assets/tiny-arith-policy"))
    ap.add_argument("--steps", type=int, default=3600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/amcs-tiny-policy-train"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")

    dataset = Dataset.from_list(policy_training_rows(args.steps * args.batch_size))
    sft = SFTConfig(
        output_dir=str(args.work_dir),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=100,
        weight_decay=0.01,
        max_length=256,
        completion_only_loss=True,
        logging_steps=100,
        save_strategy="steps",
        save_steps=900,
        save_only_model=True,
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
    )
    trainer = SFTTrainer(model=model, args=sft, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

    args.out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=256,
    )
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
