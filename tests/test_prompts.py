"""Prompts: plain for base models, the chat template for instruct models."""

from transformers import AutoTokenizer

from amcs.assets import TINY_POLICY
from amcs.prompts import DEFAULT_SYSTEM_PROMPT, prompt_ids

CHAT = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def test_plain_prompt_for_a_base_model():
    tok = AutoTokenizer.from_pretrained(TINY_POLICY)
    ids = prompt_ids(tok, "What is 1 + 2?")
    assert tok.decode(ids) == "What is 1 + 2?\n\n"


def test_chat_template_for_an_instruct_model():
    tok = AutoTokenizer.from_pretrained(TINY_POLICY)
    tok.chat_template = CHAT
    ids = prompt_ids(tok, "What is 1 + 2?", system_prompt="Be brief.")
    expected = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1 + 2?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    # The tiny vocabulary has no letters, so compare ids: the template's text, tokenised once.
    assert ids == tok(expected, add_special_tokens=False)["input_ids"]
    assert expected.endswith("<s>assistant\n") and "Be brief." in expected
    # The default system prompt asks for a boxed answer; chat=False forces the plain template.
    assert "\\boxed{}" in DEFAULT_SYSTEM_PROMPT
    assert tok.decode(prompt_ids(tok, "What is 2?", chat=False)) == "What is 2?\n\n"
