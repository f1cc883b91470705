"""The tiny policy's tokenizer, built locally with `tokenizers` (no hub).

Single characters for digits and symbols, plus single tokens for the pieces the arithmetic domain
repeats: the step separator "\\n\\n", the spaced operators, and the fixed phrases. A Unigram model
with higher scores for longer pieces makes the segmentation prefer them.
"""

from tokenizers import Tokenizer, decoders
from tokenizers.models import Unigram
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list("0123456789") + list(" ()+-*=.?{}\\\n")
PIECES = ["\n\n", " + ", " - ", " * ", " = ", "The answer is ", "\\boxed{", "What is "]


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = [(tok, 0.0) for tok in SPECIAL]
    vocab += [(c, -10.0) for c in CHARS]
    vocab += [(p, -1.0) for p in PIECES]
    tok = Tokenizer(Unigram(vocab, unk_id=SPECIAL.index("<unk>"), byte_fallback=False))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )
