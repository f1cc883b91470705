"""Train the tiny PRM's base: the tiny policy, trained further until it knows arithmetic better
than the policy whose steps the PRM judges.

    uv run python recipes/tiny-arith/train_base.py --out tiny-prm-work/base

Why: a PRM that reads a frozen LM's token probabilities (`amcs train --set policy_features=true`)
can only see the mistakes that LM would not make. With the policy itself as that LM, the errors
left after majority voting are the ones the policy makes *confidently* (`50 + 165 = 115` at
p = 0.73), and best-of-16 stayed below majority@16. 92% of the first errors in the policy's
solutions to held-out problems are wrong results of a correct operation (`a op b = c` with the
wrong c); the rest are wrong operands. A base that computes c right and is surprised by a wrong
one catches them. This is the usual practice at scale too: a PRM's base is a stronger model
than the policy it serves.

Training: warm start from the bundled policy (same tokenizer, same 1M parameters, so the PRM
stays ~4 MB); STEPS steps of BATCH_SIZE sequences, each one with probability EQUATION_FRACTION
a *pack* of EQUATIONS_PER_PACK equations ``a op b = c`` (loss on ``c`` and the separator only:
the operands are what the context gives, the result is what must be computed), otherwise a
whole reference solution in the policy's prompt format (loss on the solution, as the policy was
trained), so the base still reads the sequences the PRM scores. Equations are the steps of
reference solutions of fresh problems (PROBLEM_SEED), so their operands follow the domain's
distribution; the held-out problems are excluded. AdamW, linear warmup then cosine decay.

A pack costs what a solution costs in tokens but holds ~8 results to learn instead of ~4, and no
prompt. The schedule is in steps, not wall-clock time: about 15 minutes per 2,500 steps on 2
CPU cores with other work beside it. Set OMP_WAIT_POLICY=PASSIVE when other processes share the
cores.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from amcs.assets import TINY_POLICY
from amcs.domains.arith import ArithConfig, generate_problems, held_out_problems
from amcs.prompts import plain_prompt
from amcs.steps import DEFAULT_SEPARATOR

STEPS = 5000
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
WARMUP_STEPS = 100
WEIGHT_DECAY = 0.01
EQUATION_FRACTION = 0.5
EQUATIONS_PER_PACK = 8
PROBLEMS = 200_000
PROBLEM_SEED = 106
SEED = 7
EQUATION = re.compile(r"^(-?\d+) ([-+*]) (-?\d+) = (-?\d+)$")
IGNORE = -100


class BaseData:
    """Training sequences: (input ids, labels) with IGNORE where no loss is taken."""

    def __init__(self, tokenizer, problems: int = PROBLEMS, seed: int = SEED):
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)
        excluded = {p.expression for p in held_out_problems()}
        drawn = generate_problems(problems, seed=PROBLEM_SEED, config=ArithConfig())
        self.problems = [p for p in drawn if p.expression not in excluded]
        self.equations = [
            match
            for p in self.problems
            for step in p.solution.split(DEFAULT_SEPARATOR)
            if (match := EQUATION.match(step))
        ]
        self.next_problem = 0

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def solution(self) -> tuple[list[int], list[int]]:
        """A reference solution in the policy's prompt format; loss on the solution + EOS."""
        problem = self.problems[self.next_problem % len(self.problems)]
        self.next_problem += 1
        prompt = self.encode(plain_prompt(problem.question))
        target = self.encode(problem.solution) + [self.tokenizer.eos_token_id]
        return prompt + target, [IGNORE] * len(prompt) + target

    def pack(self, size: int = EQUATIONS_PER_PACK) -> tuple[list[int], list[int]]:
        """``size`` equations, each followed by the separator; loss on results and separators."""
        ids: list[int] = []
        labels: list[int] = []
        for _ in range(size):
            a, op, b, c = self.rng.choice(self.equations).groups()
            given = self.encode(f"{a} {op} {b} = ")
            result = self.encode(c + DEFAULT_SEPARATOR)
            ids += given + result
            labels += [IGNORE] * len(given) + result
        return ids, labels

    def batch(self, size: int, equation_fraction: float) -> dict[str, torch.Tensor]:
        rows = [
            self.pack() if self.rng.random() < equation_fraction else self.solution()
            for _ in range(size)
        ]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((size, width), self.tokenizer.pad_token_id)
        labels = torch.full((size, width), IGNORE)
        attention_mask = torch.zeros((size, width), dtype=torch.long)
        for i, (ids, target) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(target)] = torch.tensor(target)
            attention_mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def train_base(
    out: Path,
    *,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    equation_fraction: float = EQUATION_FRACTION,
    seed: int = SEED,
    problems: int = PROBLEMS,
    log_every: int = 250,
) -> dict:
    """Train the base from the bundled policy and save it (model + tokenizer) to ``out``."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(TINY_POLICY)
    model = AutoModelForCausalLM.from_pretrained(TINY_POLICY, dtype=torch.float32)
    data = BaseData(tokenizer, problems, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)

    def schedule(step: int) -> float:  # linear warmup, then cosine to 0 at `steps`
        warmup = min(1.0, (step + 1) / WARMUP_STEPS)
        return warmup * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    start, smoothed = time.monotonic(), None
    for step in range(steps):
        loss = model(**data.batch(batch_size, equation_fraction)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(
                f"base step {step + 1}/{steps}: loss {smoothed:.4f}, "
                f"{time.monotonic() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "equation_fraction": equation_fraction,
        "equations_per_pack": EQUATIONS_PER_PACK,
        "seed": seed,
        "final_loss": round(smoothed or 0.0, 4),
        "seconds": round(time.monotonic() - start, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)
    print(train_base(args.out, steps=args.steps))


if __name__ == "__main__":
    main()
