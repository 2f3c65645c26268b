"""Authentication and roles on every RPC, unary and streaming alike.

Clients send `authorization: Bearer <token>`. The tokens file holds only SHA-256 hashes of
tokens (tokens are 256 random bits, so a fast hash is enough), each with a principal name
and a role. With mutual TLS, a client certificate's common name may stand for a principal
instead. Health and reflection stay open so probes and `buf curl --list-services` work.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from skit_pipelines.domain import ANONYMOUS_ADMIN, Principal, Role
from skit_pipelines.errors import InvalidArgument
from skit_pipelines.grpc_types import MethodHandler, ServicerContext, abort_with_status

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "skp_"
ERROR_DOMAIN = "pipelines.skit.ai"
_SERVICE = "/skit.pipelines.v1.PipelineService/"
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


_METHOD_ROLES: Mapping[str, Role] = {
    "ListPipelines": Role.VIEWER,
    "GetPipeline": Role.VIEWER,
    "GetRun": Role.VIEWER,
    "ListRuns": Role.VIEWER,
    "WatchRun": Role.VIEWER,
    "WatchRuns": Role.VIEWER,
    "ReadStepLogs": Role.VIEWER,
    "CreateRun": Role.RUNNER,
    "CancelRun": Role.RUNNER,
    "RetryRun": Role.RUNNER,
    "DeleteRun": Role.RUNNER,
    "GetSchedule": Role.VIEWER,
    "ListSchedules": Role.VIEWER,
    "CreateSchedule": Role.RUNNER,
    "UpdateSchedule": Role.RUNNER,
    "PauseSchedule": Role.RUNNER,
    "ResumeSchedule": Role.RUNNER,
    "DeleteSchedule": Role.RUNNER,
    "BackfillSchedule": Role.RUNNER,
    # Subscriptions as schedules: viewers read them and their deliveries (which show no
    # secret, only secret names); runners create them and delete their own (an admin any).
    "GetSubscription": Role.VIEWER,
    "ListSubscriptions": Role.VIEWER,
    "ListDeliveries": Role.VIEWER,
    "CreateSubscription": Role.RUNNER,
    "DeleteSubscription": Role.RUNNER,
}
"""The least role for each method; runners act only on their own runs and schedules
(checked by the controllers, which know who created them)."""


_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "skit_principal", default=ANONYMOUS_ADMIN
)


def required_role(method: str) -> Role:
    """The least role that may call PipelineService `method` (e.g. "CreateRun"); the web
    console checks its actions against the same table as the API."""
    return _METHOD_ROLES.get(method, Role.ADMIN)


def current_principal() -> Principal:
    """The caller of the RPC being handled."""
    return _current.get()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str = ""
    """For bearer tokens."""
    certificate_cn: str = ""
    """For mutual TLS: the client certificate's common name."""


class TokenFile:
    """The tokens file: JSON {"principals": [{name, role, sha256 | certificate_cn, created}]}."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._by_hash = {e.sha256: e for e in entries if e.sha256}
        self._by_cn = {e.certificate_cn: e for e in entries if e.certificate_cn}

    @classmethod
    def load(cls, path: Path) -> TokenFile:
        try:
            data = json.loads(path.read_text())
            entries = [
                TokenEntry(
                    name=item["name"],
                    role=Role[item["role"].upper()],
                    sha256=item.get("sha256", ""),
                    certificate_cn=item.get("certificate_cn", ""),
                )
                for item in data.get("principals", [])
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot read tokens file {path}: {exc}") from exc
        return cls(entries)

    def by_token(self, token: str) -> Principal | None:
        entry = self._by_hash.get(hash_token(token))
        return Principal(entry.name, entry.role) if entry else None

    def by_certificate(self, common_name: str) -> Principal | None:
        entry = self._by_cn.get(common_name)
        return Principal(entry.name, entry.role) if entry else None


def add_token(path: Path, name: str, role: str) -> str:
    """Creates a token for `name`, stores only its hash in `path`, and returns the token."""
    if not name or not name.isprintable() or len(name) > 128:
        raise InvalidArgument("the principal name must be 1-128 printable characters", field="name")
    try:
        parsed_role = Role[role.upper()]
    except KeyError:
        raise InvalidArgument(
            f"role must be one of {', '.join(r.name.lower() for r in Role)}", field="role"
        ) from None
    # Imported here: only the tokens command writes tokens; serve only reads them.
    import secrets
    import tempfile

    data: dict[str, Any] = {"principals": []}
    if path.exists():
        data = json.loads(path.read_text())
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    data["principals"].append(
        {
            "name": name,
            "role": parsed_role.name.lower(),
            "sha256": hash_token(token),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole and renamed, so a reader never sees half a file; readable by owner only.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.chmod(tmp.name, 0o600)
    os.replace(tmp.name, path)
    return token


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # stubs' generics are not subscriptable at run time
    """Wraps every PipelineService handler so it first resolves and checks its caller."""

    def __init__(self, tokens: TokenFile) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        needed = _METHOD_ROLES.get(method.removeprefix(_SERVICE), Role.ADMIN)
        return _guarded(handler, method.rsplit("/", 1)[-1], needed, self._authenticate)

    def _authenticate(self, context: ServicerContext) -> Principal | None:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    return self._tokens.by_token(token.strip())
                return None
        for common_name in context.auth_context().get("x509_common_name") or ():
            principal = self._tokens.by_certificate(common_name.decode())
            if principal is not None:
                return principal
        return None


async def _abort(context: ServicerContext, code: int, reason: str, message: str) -> NoReturn:
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    await abort_with_status(context, rpc_status.to_status(status))


def _guarded(
    handler: MethodHandler,
    method: str,
    needed: Role,
    authenticate: Callable[[ServicerContext], Principal | None],
) -> MethodHandler:
    async def authorize(context: ServicerContext) -> Principal:
        principal = authenticate(context)
        if principal is None:
            await _abort(
                context,
                code_pb2.UNAUTHENTICATED,
                "UNAUTHENTICATED",
                "missing or invalid credentials: send metadata 'authorization: Bearer <token>'",
            )
        assert principal is not None
        if principal.role < needed:
            await _abort(
                context,
                code_pb2.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                f"{principal.name} ({principal.role.name.lower()}) may not call {method};"
                f" it needs the {needed.name.lower()} role",
            )
        return principal

    async def unary(request: Any, context: ServicerContext) -> Any:
        token = _current.set(await authorize(context))
        try:
            return await handler.unary_unary(request, context)
        finally:
            _current.reset(token)

    async def stream(request: Any, context: ServicerContext) -> Any:
        token = _current.set(await authorize(context))
        try:
            async for item in handler.unary_stream(request, context):
                yield item
        finally:
            _current.reset(token)

    return handler._replace(
        unary_unary=unary if handler.unary_unary else None,
        unary_stream=stream if handler.unary_stream else None,
    )
