"""How a question and a solution prefix become model input.

Instruct models get the question through the tokenizer's chat template (system prompt + user
turn, then the assistant turn opened); base models get a plain template. A node's prefix is the
prompt's token ids followed by the ids the model itself produced for the steps so far, never text
tokenised again, so prefix caches hit and the distribution sampled is the model's own.
"""

from __future__ import annotations

PLAIN_TEMPLATE = "{question}\n\n"
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def plain_prompt(question: str, template: str = PLAIN_TEMPLATE) -> str:
    """The prompt text for a base model: the question, then a blank line where the steps start."""
    return template.format(question=question)


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(
    tokenizer,
    question: str,
    *,
    template: str = PLAIN_TEMPLATE,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    chat: bool | None = None,
) -> list[int]:
    """Token ids of the prompt. chat=None uses the chat template when the tokenizer has one."""
    if chat is None:
        chat = uses_chat_template(tokenizer)
    if chat:
        messages = [{"role": "user", "content": question}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        # transformers 5 may return a BatchEncoding-like mapping.
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    text = plain_prompt(question, template)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the same ids without transformers' per-call overhead
        return backend.encode(text, add_special_tokens=False).ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]
