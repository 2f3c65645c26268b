"""Type names for grpc.aio objects that grpc-stubs (1.53) describes only partly.

grpc-stubs makes the aio context generic (not subscriptable at run time, hence the string
aliases) and types method handlers as sync callables, though grpc.aio's hold coroutine
functions; `MethodHandler` is therefore Any rather than a wrong signature.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeAlias

import grpc

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
MethodHandler: TypeAlias = Any


async def abort_with_status(context: ServicerContext, status: grpc.Status) -> NoReturn:
    """Ends the call with `status` (google.rpc.Status details included); never returns."""
    # grpc-stubs does not declare aio's abort_with_status (grpcio has it since 1.38).
    await context.abort_with_status(status)  # type: ignore[attr-defined]
    raise AssertionError("abort_with_status returned")
