"""Domain exceptions raised below the servicer; the servicer maps them to gRPC statuses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class PipelinesError(Exception):
    """Base of all domain errors. `reason` is a stable UPPER_SNAKE identifier."""

    reason = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: Mapping[str, str] = dict(metadata or {})
        """Goes to the ErrorInfo's metadata (e.g. "ui_url": where to look instead)."""


class InvalidArgument(PipelinesError):
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = list(violations or [])
        if field is not None:
            self.violations.append(FieldViolation(field, message))


class NotFound(PipelinesError):
    reason = "NOT_FOUND"


class AlreadyExists(PipelinesError):
    reason = "ALREADY_EXISTS"

    def __init__(self, message: str, *, resource_name: str, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.resource_name = resource_name


class PermissionDenied(PipelinesError):
    reason = "PERMISSION_DENIED"


class FailedPrecondition(PipelinesError):
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(PipelinesError):
    """A limit was hit; worth retrying after `retry_after` seconds."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class Unavailable(PipelinesError):
    """Transient: the only error a client should retry."""

    reason = "UNAVAILABLE"
