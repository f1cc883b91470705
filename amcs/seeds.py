"""Seeds derived from parts (a run's seed, a problem id, a question, a request's index): one
function for the search, the verification strategies and the hf backend, stable across processes
and machines (never Python's ``hash``, which is salted per process)."""

from __future__ import annotations

import hashlib
import random
from typing import Literal


def derive_seed(
    *parts: object, separator: str = ":", mixer: Literal["sha256", "mt"] = "sha256"
) -> int:
    """A 63-bit seed from ``parts``, their ``str`` joined by ``separator``:

        text = separator.join(map(str, parts))
        sha256:  seed = int(sha256(text)[:8 bytes], big-endian) >> 1
        mt:      seed = random.Random(text).getrandbits(63)   (Mersenne Twister seeded by text)

    The defaults derive the search's seeds (per problem, per request). Verification joins with
    NUL (a question may hold ':') and the hf backend seeds each row with ``mt``: both as they
    were written first, so recorded runs and tables reproduce bit for bit."""
    text = separator.join(map(str, parts))
    if mixer == "mt":
        return random.Random(text).getrandbits(63)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
