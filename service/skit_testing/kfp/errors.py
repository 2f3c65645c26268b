"""Errors as the KFP 2.17 API server reports them.

Sources (kubeflow/pipelines at the 2.17.0 release commit 020857a4):

- backend/src/common/util/error.go: `UserError` keeps an internal error (a pkg/errors
  chain: every `util.Wrap` prefixes "<context>: ") and an external message and gRPC code.
  `UserError.GRPCStatus()` turns it into a status whose message is the *internal* chain
  and whose single detail is a `google.rpc.Status{code, message: external}`.
  `ToGRPCError` (applied by apiserver/interceptor.go to every handler error) turns any
  other error into code INTERNAL, message "Internal error: <err>" and a detail with code
  UNKNOWN.
- grpc-gateway v2 (go.mod: github.com/grpc-ecosystem/grpc-gateway/v2 v2.28.0) as set up
  in backend/src/apiserver/main.go (`runtime.NewServeMux` with common.CustomMarshaler():
  protojson, UseProtoNames, EmitUnpopulated false): its DefaultHTTPErrorHandler writes the
  status as JSON, `{"code": <grpc code>, "message": ..., "details": [{"@type":
  "type.googleapis.com/google.rpc.Status", "code": ..., "message": ...}]}` (no "error"
  key: that was grpc-gateway v1), with the HTTP status from runtime.HTTPStatusFromCode
  and, for UNAUTHENTICATED, a WWW-Authenticate header holding the message. Empty
  `details` are omitted (EmitUnpopulated false). Unmatched routes answer NOT_FOUND
  "Not Found" (runtime.DefaultRoutingErrorHandler).
- backend/src/apiserver/server/pipeline_upload_server.go: the multipart upload endpoints
  are plain HTTP handlers, not grpc-gateway: `writeErrorToResponse` writes
  `{"error_message": ..., "error_details": ...}` (encoding/json of api/v1beta1 Error),
  and field-length checks use `http.Error` (a text/plain body).
"""

from __future__ import annotations

import json
from typing import Any

# The gRPC codes (google.golang.org/grpc/codes) by the same numbers as google.rpc.Code.
from skit_pipelines.domain import Code as Code

HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
"""grpc-gateway v2 runtime.HTTPStatusFromCode."""

_CODE_FOR_HTTP: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ALREADY_EXISTS,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}

STATUS_TYPE_URL = "type.googleapis.com/google.rpc.Status"
INTERNAL_SERVER_ERROR = "Internal Server Error"
"""The external message of util.NewInternalServerError."""


def code_for_http_status(status: int) -> Code:
    """The gRPC code whose HTTP status is `status` (UNKNOWN when none maps to it, e.g. 502)."""
    return _CODE_FOR_HTTP.get(status, Code.UNKNOWN)


class ApiError(Exception):
    """An error as a KFP handler returns it: a gRPC code, the internal chain (the status
    message) and the external message (the status detail), or none for errors raised
    before a handler runs (request decoding, routing)."""

    def __init__(self, code: Code, message: str, external: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.external = external

    def wrap(self, context: str) -> ApiError:
        """util.Wrap: the chain gains a prefix; code and external message stay."""
        return ApiError(self.code, f"{context}: {self.message}", self.external)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def body(self) -> dict[str, Any]:
        """The grpc-gateway v2 error body."""
        body: dict[str, Any] = {"code": int(self.code), "message": self.message}
        if self.external is not None:
            body["details"] = [
                {"@type": STATUS_TYPE_URL, "code": int(self.detail_code), "message": self.external}
            ]
        return body

    @property
    def detail_code(self) -> Code:
        # ToGRPCError gives non-UserErrors a detail with code UNKNOWN under an INTERNAL status.
        return Code.UNKNOWN if self.message.startswith(_PLAIN_ERROR_PREFIX) else self.code


_PLAIN_ERROR_PREFIX = "Internal error: "


# Constructors named after backend/src/common/util/error.go.


def not_found_resource(kind: str, name: str) -> ApiError:
    """util.NewResourceNotFoundError."""
    external = f"{kind} {name} not found"
    return ApiError(Code.NOT_FOUND, f"ResourceNotFoundError: {external}", external)


def not_found(cause: str, external: str) -> ApiError:
    """util.NewNotFoundError."""
    return ApiError(Code.NOT_FOUND, f"NotFoundError: {external}: {cause}", external)


def invalid_input(message: str) -> ApiError:
    """util.NewInvalidInputError."""
    return ApiError(Code.INVALID_ARGUMENT, f"Invalid input error: {message}", message)


def invalid_input_with_details(cause: str, external: str) -> ApiError:
    """util.NewInvalidInputErrorWithDetails."""
    return ApiError(Code.INVALID_ARGUMENT, f"InvalidInputError: {external}: {cause}", external)


def already_exists(message: str) -> ApiError:
    """util.NewAlreadyExistError."""
    return ApiError(Code.ALREADY_EXISTS, f"Already exist error: {message}", message)


def internal(cause: str, message: str) -> ApiError:
    """util.NewInternalServerError: the cause is hidden behind "Internal Server Error"."""
    return ApiError(
        Code.INTERNAL, f"InternalServerError: {message}: {cause}", INTERNAL_SERVER_ERROR
    )


def unauthenticated(cause: str, external: str) -> ApiError:
    """util.NewUnauthenticatedError."""
    return ApiError(Code.UNAUTHENTICATED, f"Unauthenticated: {external}: {cause}", external)


def plain(message: str) -> ApiError:
    """A non-UserError (e.g. an Argo compiler error) after util.ToGRPCError."""
    text = f"{_PLAIN_ERROR_PREFIX}{message}"
    return ApiError(Code.INTERNAL, text, text)


def gateway(code: Code, message: str) -> ApiError:
    """An error grpc-gateway raises itself (bad JSON, unknown field, no route): no details."""
    return ApiError(code, message)


def routing_not_found() -> ApiError:
    return gateway(Code.NOT_FOUND, "Not Found")


class UploadError(Exception):
    """An answer of the multipart upload handlers (pipeline_upload_server.go)."""

    def __init__(
        self, status: int, message: str, *, plain_text: bool = False, sniffed: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.plain_text = plain_text
        self.sniffed = sniffed
        """True for errors written before the handler sets Content-Type: Go's
        ResponseWriter then sniffs the body, which gives text/plain for JSON."""

    def payload(self) -> tuple[str, bytes]:
        """(content type, body)."""
        if self.plain_text:
            # http.Error: text/plain with a trailing newline.
            return _SNIFFED_TEXT, (self.message + "\n").encode()
        # writeErrorToResponse: encoding/json of apiv1beta1.Error. error_details is
        # fmt.Sprintf("%+v", errors.New(msg)), which adds a Go stack trace after the
        # message; the stand-in has no stack to print.
        body = {"error_message": self.message, "error_details": self.message}
        return (_SNIFFED_TEXT if self.sniffed else "application/json"), json.dumps(body).encode()


_SNIFFED_TEXT = "text/plain; charset=utf-8"
