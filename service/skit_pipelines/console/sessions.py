"""Console sign-in: an API token exchanged for a session cookie, and CSRF tokens.

The cookie holds only a random session id (HttpOnly, SameSite=Strict); the token itself
is checked once, against the same tokens file as the gRPC API, and never stored. Each
session has a CSRF token the page reads from /api/session and sends back in a header
on every POST, which a cross-site form or a script of another origin cannot do.

Sessions live in this process: behind several replicas, the console needs sticky
sessions (or a sign-in per replica).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from skit_pipelines.auth import TokenFile
from skit_pipelines.domain import ANONYMOUS_ADMIN, Principal

COOKIE = "skit_console"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
"""The oldest sessions are dropped beyond this (sign-ins are not rate-limited here)."""

Clock = Callable[[], float]


@dataclass(frozen=True)
class Session:
    id: str
    principal: Principal
    csrf: str
    expires: float


class Sessions:
    """Sign-in state. With `tokens` None (authentication off) everyone is an anonymous
    admin, as in the API, and sessions only carry CSRF tokens."""

    def __init__(self, tokens: TokenFile | None, *, clock: Clock = time.monotonic) -> None:
        self._tokens = tokens
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    @property
    def auth(self) -> bool:
        return self._tokens is not None

    def _new(self, principal: Principal) -> Session:
        self._expire()
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session = Session(
            id=secrets.token_urlsafe(32),
            principal=principal,
            csrf=secrets.token_urlsafe(32),
            expires=self._clock() + SESSION_SECONDS,
        )
        self._sessions[session.id] = session
        return session

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]

    def sign_in(self, token: str) -> Session | None:
        """A new session for the principal of `token`; None for an unknown token."""
        if self._tokens is None:
            return self._new(ANONYMOUS_ADMIN)
        principal = self._tokens.by_token(token.strip())
        return None if principal is None else self._new(principal)

    def get(self, session_id: str | None) -> Session | None:
        session = self._sessions.get(session_id or "")
        if session is None or session.expires <= self._clock():
            return None
        return session

    def anonymous(self) -> Session:
        """With authentication off: a session for a visitor who has none yet."""
        assert self._tokens is None
        return self._new(ANONYMOUS_ADMIN)

    def sign_out(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


def csrf_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf, sent)
