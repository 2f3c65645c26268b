"""TLS, mutual TLS (client certificate principals) and the refusal to expose an
unauthenticated server beyond loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc
from skit_pipelines import auth
from skit_pipelines.catalog import Catalog
from skit_pipelines.config import ServerConfig
from skit_pipelines.runs import RunController
from skit_pipelines.server import ExposureError, check_exposure, create_grpc_server
from skit_pipelines.store.sqlite import SqliteRunStore


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _issue(subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    pem = Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return pem, (name, key)


@pytest.fixture(scope="module")
def pki():
    ca, ca_signer = _issue("skit test CA", None, ca=True)
    server, _ = _issue("localhost", ca_signer, ca=False)
    client, _ = _issue("svc-reports", ca_signer, ca=False)
    _, stranger_signer = _issue("other CA", None, ca=True)
    stranger, _ = _issue("svc-reports", stranger_signer, ca=False)
    return {"ca": ca, "server": server, "client": client, "stranger": stranger}


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def serve(tmp_path: Path, typed_pipeline, config: ServerConfig):
    store = SqliteRunStore(tmp_path / "runs.db")
    controller = RunController(store, Catalog({typed_pipeline.id: typed_pipeline}), None)  # type: ignore[arg-type]
    server, port, _ = await create_grpc_server(controller, config)
    await server.start()
    return server, port, store


async def list_pipelines(port: int, credentials: grpc.ChannelCredentials, metadata=()):
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        return await stub.ListPipelines(pb.ListPipelinesRequest(), metadata=metadata, timeout=5)


async def test_tls_with_bearer_token(tmp_path: Path, pki, typed_pipeline) -> None:
    tokens = tmp_path / "tokens.json"
    token = auth.add_token(tokens, "viewer-bot", "viewer")
    config = ServerConfig(
        port=0,
        home=tmp_path,
        tokens_file=tokens,
        tls_cert_file=write(tmp_path, "server.pem", pki["server"].cert),
        tls_key_file=write(tmp_path, "server.key", pki["server"].key),
    )
    server, port, store = await serve(tmp_path, typed_pipeline, config)
    try:
        trust = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert)
        response = await list_pipelines(port, trust, (("authorization", f"Bearer {token}"),))
        assert [p.name for p in response.pipelines] == ["pipelines/typed"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_pipelines(port, trust)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pipeline_service_pb2_grpc.PipelineServiceStub(plain).ListPipelines(
                    pb.ListPipelinesRequest(), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
        await store.close()


async def test_mutual_tls_client_certificate_is_the_principal(
    tmp_path: Path, pki, typed_pipeline
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {"principals": [{"name": "reports", "role": "viewer", "certificate_cn": "svc-reports"}]}
        )
    )
    config = ServerConfig(
        port=0,
        home=tmp_path,
        tokens_file=tokens,
        tls_cert_file=write(tmp_path, "server.pem", pki["server"].cert),
        tls_key_file=write(tmp_path, "server.key", pki["server"].key),
        tls_client_ca_file=write(tmp_path, "ca.pem", pki["ca"].cert),
    )
    server, port, store = await serve(tmp_path, typed_pipeline, config)
    try:
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].cert,
            private_key=pki["client"].key,
            certificate_chain=pki["client"].cert,
        )
        response = await list_pipelines(port, with_cert)
        assert len(response.pipelines) == 1
        for credentials in (
            grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert),
            grpc.ssl_channel_credentials(
                root_certificates=pki["ca"].cert,
                private_key=pki["stranger"].key,
                certificate_chain=pki["stranger"].cert,
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_pipelines(port, credentials)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
        await store.close()


@pytest.mark.parametrize(
    ("host", "tokens", "insecure", "allowed"),
    [
        ("127.0.0.1", None, False, True),
        ("::1", None, False, True),
        ("localhost", None, False, True),
        ("0.0.0.0", None, False, False),
        ("10.1.2.3", None, False, False),
        ("0.0.0.0", Path("tokens.json"), False, True),
        ("0.0.0.0", None, True, True),
    ],
)
def test_no_unauthenticated_server_beyond_loopback(host, tokens, insecure, allowed) -> None:
    config = ServerConfig(host=host, tokens_file=tokens, insecure=insecure)
    if allowed:
        check_exposure(config)
    else:
        with pytest.raises(ExposureError, match="--tokens-file"):
            check_exposure(config)
