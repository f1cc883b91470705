"""A stand-in inference server on 127.0.0.1 for the HTTP backends' tests and benchmarks.

It serves SGLang's native ``/health``, ``/server_info`` and ``/generate`` and the
OpenAI-compatible ``/v1/models`` and ``/v1/completions``, sampling from the bundled tiny policy
with ``HFBackend`` (run on its own event loop thread). It reports ``cached_tokens`` as the longest
prefix of a request's ``input_ids`` shared with any earlier request, like a radix cache that never
evicts. Per-token logprobs are the rollout's logprob_sum spread evenly over its tokens (the sum is
exact). Every request body is kept in ``requests``; ``fail_next`` answers that many generation
requests with HTTP 500, ``reject_next`` with HTTP 400, and ``die_after`` shuts the server down
once that many generation requests have been answered. ``echo_headers = (status, message)``
answers every generation request with that status and an OpenAI-style error whose message is
``message`` followed by the request's headers, Authorization included, as a debugging proxy or a
careless server echoes them.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from amcs.backends.base import SamplingParams
from amcs.backends.hf import HFBackend


class _Trie:
    def __init__(self) -> None:
        self.root: dict = {}
        self.lock = threading.Lock()

    def add(self, ids: list[int]) -> int:
        """Insert ids; return how many leading ids were already present."""
        with self.lock:
            node, shared, matching = self.root, 0, True
            for t in ids:
                if matching and t in node:
                    shared += 1
                else:
                    matching = False
                node = node.setdefault(t, {})
            return shared


class LoopbackServer:
    def __init__(self, backend: HFBackend | None = None) -> None:
        self.backend = backend or HFBackend(max_batch_size=64)
        self.tokenizer = self.backend.tokenizer
        self.requests: list[tuple[str, dict]] = []
        self.fail_next = 0
        self.reject_next = 0
        self.die_after: int | None = None
        self.echo_headers: tuple[int, str] | None = None
        self.served = 0
        self._trie = _Trie()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._loop_thread.start()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        self._closed = False

    # --- control ------------------------------------------------------------------------------

    def stop_serving(self) -> None:
        """Stop accepting connections (the model stays loaded, so close() is still needed)."""
        if not self._closed:
            self._closed = True
            self.httpd.shutdown()
            self.httpd.server_close()

    def close(self) -> None:
        self.stop_serving()
        asyncio.run_coroutine_threadsafe(self.backend.aclose(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- generation ---------------------------------------------------------------------------

    def _sample(self, ids: list[int], n: int, params: SamplingParams):
        fut = asyncio.run_coroutine_threadsafe(self.backend.sample(ids, n, params), self._loop)
        return fut.result(120)

    def _gate(self) -> int | None:
        """The error status to answer a generation request with, or None to serve it."""
        with self._lock:
            if self.die_after is not None and self.served >= self.die_after:
                return -1
            if self.reject_next:
                self.reject_next -= 1
                return 400
            if self.fail_next:
                self.fail_next -= 1
                return 500
            return None

    def _served_one(self) -> None:
        with self._lock:
            self.served += 1
            die = self.die_after is not None and self.served >= self.die_after
        if die:
            threading.Thread(target=self.stop_serving, daemon=True).start()

    def generate(self, body: dict) -> object:
        ids = list(body["input_ids"])
        sp = body.get("sampling_params") or {}
        n = int(sp.get("n", 1))
        params = SamplingParams(
            temperature=float(sp.get("temperature", 1.0)),
            top_p=float(sp.get("top_p", 1.0)),
            top_k=max(0, int(sp.get("top_k", -1))),
            max_new_tokens=int(sp.get("max_new_tokens", 128)),
            stop=tuple(sp.get("stop") or ()),
            seed=sp.get("sampling_seed"),
        )
        # Like a radix cache: the first copy finds what earlier requests left (prompts and the
        # tokens they generated); parallel copies after it find the whole prompt.
        cached = self._trie.add(ids)
        outs = []
        for i, r in enumerate(self._sample(ids, n, params)):
            self._trie.add(ids + r.token_ids)
            per = r.logprob_sum / max(1, len(r.token_ids))
            outs.append(
                {
                    "text": r.text,
                    "output_ids": r.token_ids,
                    "meta_info": {
                        "finish_reason": {"type": r.finish_reason},
                        "prompt_tokens": len(ids),
                        "completion_tokens": len(r.token_ids),
                        "cached_tokens": cached if i == 0 else len(ids),
                        "output_token_logprobs": [[per, t, None] for t in r.token_ids],
                    },
                }
            )
        return outs if n > 1 else outs[0]

    def completions(self, body: dict) -> dict:
        ids = list(body["prompt"])
        n = int(body.get("n", 1))
        params = SamplingParams(
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            top_k=max(0, int(body.get("top_k", 0) or 0)),
            max_new_tokens=int(body.get("max_tokens", 16)),
            stop=tuple(body.get("stop") or ()),
            seed=body.get("seed"),
        )
        cached = self._trie.add(ids)
        choices, total = [], 0
        for i, r in enumerate(self._sample(ids, n, params)):
            per = r.logprob_sum / max(1, len(r.token_ids))
            total += len(r.token_ids)
            choices.append(
                {
                    "index": i,
                    "text": r.text,
                    "finish_reason": r.finish_reason,
                    "logprobs": {
                        "tokens": self.tokenizer.convert_ids_to_tokens(r.token_ids),
                        "token_logprobs": [per] * len(r.token_ids),
                    },
                }
            )
        return {
            "object": "text_completion",
            "model": body.get("model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": total,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }

    # --- HTTP ---------------------------------------------------------------------------------

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, obj: object) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(200, {})
                elif self.path in ("/server_info", "/get_server_info"):
                    self._send(200, {"model_path": "amcs/tiny-arith-policy", "loopback": True})
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path not in ("/generate", "/v1/completions"):
                    self._send(404, {"error": "not found"})
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": "invalid JSON"})
                    return
                with server._lock:
                    server.requests.append((self.path, body))
                if server.echo_headers is not None:
                    status, message = server.echo_headers
                    echoed = f"{message}; request headers: {dict(self.headers.items())}"
                    self._send(status, {"error": {"message": echoed, "type": "EchoError"}})
                    return
                status = server._gate()
                if status == -1:  # dead: drop the connection without an answer
                    self.close_connection = True
                    return
                if status is not None:
                    self._send(status, {"error": f"injected HTTP {status}"})
                    return
                try:
                    if self.path == "/generate":
                        out = server.generate(body)
                    else:
                        out = server.completions(body)
                except (KeyError, TypeError, ValueError) as exc:
                    self._send(400, {"error": f"{type(exc).__name__}: {exc}"})
                    return
                except Exception as exc:  # noqa: BLE001
                    self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
                    return
                self._send(200, out)
                server._served_one()

        return Handler
