"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 (port 0) that records
every POST and answers with scripted statuses (e.g. 500, 500, 500, then 200)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    """What the receiver answered."""


class WebhookReceiver:
    """Answers the i-th request with statuses[i] (the last one once they run out)."""

    def __init__(self, statuses: Sequence[int] = (200,)) -> None:
        self.statuses = list(statuses) or [200]
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    index = len(receiver.requests)
                    status = receiver.statuses[min(index, len(receiver.statuses) - 1)]
                    receiver.requests.append(
                        ReceivedRequest(self.path, dict(self.headers.items()), body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/skit"

    def received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self.requests)

    def accepted(self) -> list[ReceivedRequest]:
        return [r for r in self.received() if 200 <= r.status < 300]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def webhook_receiver(statuses: Sequence[int] = (200,)) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(statuses)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
