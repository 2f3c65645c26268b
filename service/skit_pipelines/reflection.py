"""Server reflection, v1 and v1alpha.

grpcio-reflection 1.81 (the newest that works with the protobuf 6 kfp needs) serves only
v1alpha. v1 is the same protocol under another package, so v1 is served by the same
servicer: the v1 file descriptor is the v1alpha one renamed, and the messages are
wire-identical.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc

from skit_pipelines.grpc_types import MethodHandler

if TYPE_CHECKING:
    from google.protobuf import descriptor_pool

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME = "grpc.reflection.v1alpha.ServerReflection"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"
_METHOD = "ServerReflectionInfo"


def _register_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = _V1_PACKAGE
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name.removeprefix(old)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    pool.Add(proto)


class _Reflection(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # stubs' generics are not subscriptable at run time
    """Both versions' handlers, built at the first reflection call: grpcio-reflection and
    the descriptors it needs take a few ms to import, which every start would pay for a
    call that few clients make."""

    def __init__(self, service_names: tuple[str, ...]) -> None:
        self._service_names = service_names
        self._handler: MethodHandler | None = None

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> MethodHandler | None:
        method = handler_call_details.method
        if method not in (f"/{V1ALPHA_SERVICE_NAME}/{_METHOD}", f"/{V1_SERVICE_NAME}/{_METHOD}"):
            return None
        if self._handler is None:
            self._handler = _handler(self._service_names)
        return self._handler


def _handler(service_names: tuple[str, ...]) -> MethodHandler:
    """v1 and v1alpha are served alike: their messages are wire-identical."""
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha._async import ReflectionServicer

    _register_v1_descriptor(descriptor_pool.Default())
    servicer = ReflectionServicer(service_names)
    return grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )


def enable(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    names = (*service_names, V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME)
    server.add_generic_rpc_handlers((_Reflection(names),))
