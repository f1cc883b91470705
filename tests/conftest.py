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


# --- test tiers ---------------------------------------------------------------------------------
# `uv run pytest` runs the fast tier (pyproject's addopts: not slow, servers or browser), in a few
# minutes on 2 cores; `.ci/run` runs every tier. A test joins a tier by an explicit mark
# (@pytest.mark.slow), by the fixtures it uses, or by its file being listed here. Run one tier with
# `uv run pytest -m slow` (or servers, browser), all with `uv run pytest -m ""`.

# Whole files of real `amcs` programs in subprocesses, benchmarks and multi-process training.
SLOW_FILES = {
    "test_hostile.py",
    "test_label_quality.py",
    "test_prm_comparison.py",
    "test_gpu_check.py",
    "test_training_distributed.py",
}
# Fixtures that start a real server (vLLM's CPU build, sglang-router) or run the real SmolLM2.
SERVER_FIXTURES = {"vllm_server", "router_fleet", "smollm2", "vllm_prm_server"}
SERVER_FILES = {"test_real_servers.py", "test_smollm2.py"}
# Fixtures that drive headless Chromium.
BROWSER_FIXTURES = {"browser", "page"}


def tier_of(item) -> str | None:
    """The tier marker an item gets besides its explicit ones (None: the fast tier)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    name = item.path.name
    if fixtures & SERVER_FIXTURES or name in SERVER_FILES:
        return "servers"
    if fixtures & BROWSER_FIXTURES:
        return "browser"
    if name in SLOW_FILES:
        return "slow"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = tier_of(item)
        if tier is not None and tier not in item.keywords:
            item.add_marker(getattr(pytest.mark, tier))
        if item.path.name in SERVER_FILES:
            # One worker per file under `pytest -n 2 --dist loadgroup`: its server or SmolLM2
            # run is started once.
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    """A pytest ended by SIGTERM (a CI timeout, `kill`) stops as on Ctrl-C, so its fixtures'
    teardowns run and the servers they started are stopped rather than left behind."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)


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
