"""Bundled tiny models: they make every command run with no GPU and no model hub."""

from pathlib import Path

ASSETS = Path(__file__).parent
TINY_POLICY = ASSETS / "tiny-arith-policy"
TINY_PRM = ASSETS / "tiny-arith-prm"
# The name written into data and results for the bundled policy (its path differs per install).
TINY_POLICY_NAME = "amcs/tiny-arith-policy"
