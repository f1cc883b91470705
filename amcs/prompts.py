"""How a question and a solution prefix become model input.

A node's prefix is the prompt's token ids followed by the ids the model itself produced for the
steps so far; the text is never re-tokenised, so prefix caches hit and the distribution sampled is
the model's own.
"""

from __future__ import annotations

PLAIN_TEMPLATE = "{question}\n\n"


def plain_prompt(question: str, template: str = PLAIN_TEMPLATE) -> str:
    """The prompt text for a base model: the question, then a blank line where the steps start."""
    return template.format(question=question)


def prompt_ids(tokenizer, question: str, template: str = PLAIN_TEMPLATE) -> list[int]:
    """Token ids of the prompt, without special tokens the tokenizer would add on its own."""
    return tokenizer(plain_prompt(question, template), add_special_tokens=False)["input_ids"]
