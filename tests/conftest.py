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
