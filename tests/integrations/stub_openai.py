"""A local OpenAI-compatible HTTP server for the tests: ``http://127.0.0.1:<port>/<name>/v1`` answers
``POST .../chat/completions`` as the model ``name`` is told to (a fixed answer, an HTTP error, or a delay)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Behaviour:
    answer: str = "ok"
    status: int = 200
    delay_s: float = 0.0


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.behaviours = behaviours
        self.calls: list[tuple[str, str]] = []  # (endpoint name, model in the request body)
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}/v1"


class Handler(BaseHTTPRequestHandler):
    server: StubServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_POST(self) -> None:
        name, _, rest = self.path.strip("/").partition("/")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        behaviour = self.server.behaviours.get(name)
        if behaviour is None or rest != "v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        with self.server.lock:
            self.server.calls.append((name, str(body.get("model"))))
        if behaviour.delay_s:
            time.sleep(behaviour.delay_s)
        if behaviour.status != 200:
            return self._send(
                behaviour.status, {"error": {"message": f"{name} says {behaviour.status}", "type": "x"}}
            )
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        self._send(
            200,
            {
                "id": f"chatcmpl-{time.time_ns()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": behaviour.answer},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": 3,
                    "total_tokens": prompt_tokens + 3,
                },
            },
        )

    def _send(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass


@contextmanager
def stub_server(behaviours: dict[str, Behaviour]) -> Iterator[StubServer]:
    server = StubServer(behaviours)
    thread = threading.Thread(target=server.serve_forever, name="stub-openai", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
