"""A loopback HTTP server that speaks enough of the Anthropic Messages API for tests.

Point the real ``anthropic`` SDK at ``server.base_url``. Every request is recorded (method,
path, headers, JSON body). Replies are scripted: ``enqueue`` answers the next requests in
order; when the queue is empty, ``default`` answers.

    with FakeAnthropic() as server:
        server.enqueue(error_reply(529, "overloaded_error", "Overloaded"), message_reply("hi"))
        client = anthropic.Anthropic(api_key="k", base_url=server.base_url)
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAKE_MODEL = "claude-sonnet-5-5-20260101"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # JSON-able; bytes are sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering (a slow API)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    body: Any  # parsed JSON, or None

    @property
    def text(self) -> str:
        """Everything that was sent except the headers, as text."""
        return self.raw.decode("utf-8", "replace")


def message_reply(
    text: str,
    *,
    model: str = FAKE_MODEL,
    input_tokens: int = 1234,
    output_tokens: int = 567,
    stop_reason: str = "end_turn",
) -> Reply:
    return Reply(
        200,
        {
            "id": "msg_fake_0001",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
        {"request-id": "req_fake_0001"},
    )


def error_reply(
    status: int, error_type: str, message: str, *, headers: dict[str, str] | None = None
) -> Reply:
    return Reply(
        status,
        {"type": "error", "error": {"type": error_type, "message": message}},
        {"request-id": f"req_fake_{status}", **(headers or {})},
    )


class FakeAnthropic:
    """``POST /v1/messages`` on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or message_reply("## Performance assessment\nFine.")
        self.requests: list[Recorded] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # a quick shutdown
            name="fake-anthropic",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases slow replies
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if not size:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, reply: Reply) -> None:
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                raw = self._read_body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with fake._lock:
                    fake.requests.append(
                        Recorded(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            raw,
                            body,
                        )
                    )
                if self.command != "POST" or self.path.split("?")[0] != "/v1/messages":
                    reply = error_reply(404, "not_found_error", f"no route {self.path}")
                else:
                    reply = fake._next_reply()
                if reply.delay_s and fake._stopping.wait(reply.delay_s):
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(reply)  # unless the client gave up (timeout)

            do_POST = _handle
            do_GET = _handle

        return Handler
