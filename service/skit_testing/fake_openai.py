"""A local OpenAI-compatible chat completions (and audio transcriptions) server for tests.

Components that call an LLM read its base URL from their environment; tests point that at
`FakeChatServer(...).url`, a real HTTP server on 127.0.0.1 with a free port, and decide
per request what it answers (a reply, an error status, a delay past the client's timeout,
a malformed body). It records every request it receives and the most requests it served
at once, so tests can check what left the machine and how concurrent the client was.

    with FakeChatServer(lambda request: chat_reply('{"breaches": []}')) as server:
        os.environ["LLM_BASE_URL"] = server.url

Where its shapes come from (OpenAI's API reference, which OpenAI-compatible servers such as
vLLM and llama.cpp's server follow):
- `POST /v1/chat/completions` (https://platform.openai.com/docs/api-reference/chat/create):
  the request is JSON with `model`, `messages` and optional `temperature` and
  `response_format` (`{"type": "json_schema", "json_schema": {...}}` for structured output,
  https://platform.openai.com/docs/guides/structured-outputs); the server does not enforce
  the schema, the test's `respond` decides what comes back (malformed output included).
- `chat_reply` is the chat completion object
  (https://platform.openai.com/docs/api-reference/chat/object): `id`, `object`
  "chat.completion", `model`, `choices[].message.{role, content}`, `finish_reason`,
  `usage`.
- Errors are whatever `Reply(status, body)` a test gives: OpenAI answers 401 for a bad key,
  429 for rate limits (with `Retry-After` on some servers) and 5xx for server errors, with
  a body `{"error": {"message", "type", "code"}}`
  (https://platform.openai.com/docs/guides/error-codes). Paths other than the chat path get
  a bare 404, which the components only report.
- `POST /v1/audio/transcriptions`
  (https://platform.openai.com/docs/api-reference/audio/createTranscription), served only
  when a `transcribe` callable is given: the request is a multipart form with the audio
  `file` and the fields `model`, `response_format` (`json`, `verbose_json`, ...) and an
  optional `language`; the recorded `Request` has the fields in `form` and the file in
  `files` (its body is None). `transcription_reply` is the `json` answer `{"text": ...}`,
  or with `segments` the `verbose_json` one
  (https://platform.openai.com/docs/api-reference/audio/verbose-json-object): `task`,
  `language`, `duration`, `text`, `segments[].{id, start, end, text, avg_logprob,
  no_speech_prob}`. whisper.cpp's server, faster-whisper-server and vLLM answer the same
  shapes. Errors as for chat: `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request."""

    status: int = 200
    body: Any = None
    """A JSON value, or bytes sent as they are."""
    delay_seconds: float = 0.0
    """Sleep this long first (past the client's timeout, to make it time out)."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: Any
    """The parsed JSON body (None when it was not JSON)."""
    form: dict[str, str] = field(default_factory=dict)
    """A multipart form's text fields (transcription requests)."""
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """A multipart form's files: field name -> (file name, bytes)."""

    @property
    def messages(self) -> list[dict[str, str]]:
        return list((self.body or {}).get("messages") or [])

    @property
    def text(self) -> str:
        """Every message's content, joined: what the client sent out."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


def chat_reply(content: str, *, total_tokens: int = 42, model: str = "fake-model") -> Reply:
    """A successful chat completion whose message content is `content`."""
    return Reply(
        body={
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": total_tokens - 2,
                "completion_tokens": 2,
                "total_tokens": total_tokens,
            },
        }
    )


def transcription_reply(
    text: str, *, segments: list[tuple[float, float, str, float]] | None = None
) -> Reply:
    """A successful transcription: `{"text"}` (response_format json), or with `segments`
    ((start, end, text, avg_logprob) each) the verbose_json object."""
    if segments is None:
        return Reply(body={"text": text})
    return Reply(
        body={
            "task": "transcribe",
            "language": "english",
            "duration": segments[-1][1] if segments else 0.0,
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": 0,
                    "start": start,
                    "end": end,
                    "text": part,
                    "tokens": [],
                    "temperature": 0.0,
                    "avg_logprob": logprob,
                    "compression_ratio": 1.0,
                    "no_speech_prob": round(1 - math.exp(logprob), 4),
                }
                for i, (start, end, part, logprob) in enumerate(segments)
            ],
        }
    )


def _multipart(
    content_type: str, raw: bytes
) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """The fields and files of a multipart/form-data body (the stdlib email parser reads
    MIME multipart, which form-data is)."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    form: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    if not message.is_multipart():
        return form, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        if not isinstance(name, str):
            continue
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, payload)
        else:
            form[name] = payload.decode("utf-8", "replace")
    return form, files


class FakeChatServer:
    """Answers POST <url>/chat/completions with `respond(request)`, and POST
    <url>/audio/transcriptions with `transcribe(request)` when one is given; 404 elsewhere."""

    def __init__(
        self,
        respond: Callable[[Request], Reply] | None = None,
        *,
        transcribe: Callable[[Request], Reply] | None = None,
    ) -> None:
        self.respond = respond
        self.transcribe = transcribe
        self.requests: list[Request] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, as OpenAI clients take it (…/v1)."""
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                content_type = self.headers.get("Content-Type") or ""
                form: dict[str, str] = {}
                files: dict[str, tuple[str, bytes]] = {}
                body: Any = None
                if content_type.startswith("multipart/form-data"):
                    form, files = _multipart(content_type, raw)
                else:
                    try:
                        body = json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        body = None
                request = Request(self.path, dict(self.headers.items()), body, form, files)
                with server._lock:
                    server.requests.append(request)
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    if self.path == CHAT_PATH and server.respond is not None:
                        reply = server.respond(request)
                    elif self.path == TRANSCRIPTIONS_PATH and server.transcribe is not None:
                        reply = server.transcribe(request)
                    else:
                        reply = Reply(404, {"error": "not found"})
                    if reply.delay_seconds:
                        time.sleep(reply.delay_seconds)
                finally:
                    # Before answering: once the client has the answer it may send its
                    # next request, which must not find this one still counted.
                    with server._lock:
                        server._in_flight -= 1
                payload = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timed out) first

        return Handler


def unreachable_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connections are refused): a port
    that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
