import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(
    os.environ.get("AMCS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def shared_data(name: str) -> Path:
    """A file from ../shared/data, or skip: a fresh clone has no ../shared."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found: real-data tests need ../shared/data (or AMCS_SHARED_DATA)")
    return path


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


SMOLLM2_PREPARE = (
    Path(__file__).resolve().parents[1] / "recipes" / "smollm2-135m" / "prepare_model.sh"
)
SMOLLM2_DIR = Path(
    os.environ.get("AMCS_SMOLLM2", "~/.cache/amcs/smollm2-135m-instruct")
).expanduser()


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as recipes/smollm2-135m/prepare_model.sh converts it, or skip the test
    saying how to prepare it; with AMCS_REQUIRE_SERVERS=1 (CI, which prepares it) a missing model
    fails the test instead. Tests never download it themselves."""
    if (SMOLLM2_DIR / ".amcs-ready").is_file():
        return SMOLLM2_DIR
    why = (
        f"SmolLM2-135M-Instruct is not prepared at {SMOLLM2_DIR}: run {SMOLLM2_PREPARE} "
        "(~1 min, no model hub; or set AMCS_SMOLLM2) to run the real-model tests"
    )
    from tests.servers import missing

    missing(why)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return smollm2_dir()
