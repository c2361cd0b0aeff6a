"""gRPC with TLS between gateway and worker: a CA the test makes (the `cryptography` package)
signs the worker's certificate and the gateway's client certificate; the worker requires client
certificates (mutual TLS) and refuses a client without one, or with one another CA signed."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fireside.server import build_app
from fireside.settings import Settings
from fireside.worker.v1 import worker_pb2 as pb
from fireside.worker.v1 import worker_pb2_grpc as pb_grpc
from tests.api_utils import run_app
from tests.worker_utils import Proc, start_worker, wait_serving

pytestmark = pytest.mark.timeout(180)


@dataclass
class Pem:
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pem:
    pem = Pem(path.with_suffix(".crt"), path.with_suffix(".key"))
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem


class CertificateAuthority:
    def __init__(self, directory: Path, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.name = _name(name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = _write(directory / name, self.cert, self.key)

    def issue(self, directory: Path, name: str, *, server: bool) -> Pem:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _write(directory / name, builder.sign(self.key, hashes.SHA256()), key)


@dataclass
class Pki:
    ca: CertificateAuthority
    worker: Pem
    gateway: Pem
    stranger: Pem  # a client certificate another CA signed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = CertificateAuthority(d, "fireside-test-ca"), CertificateAuthority(d, "other-ca")
    return Pki(
        ca,
        ca.issue(d, "worker", server=True),
        ca.issue(d, "gateway", server=False),
        other.issue(d, "stranger", server=False),
    )


def credentials(pki: Pki, client: Pem | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.pem.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )


@pytest.fixture(scope="module")
def mtls_worker(
    api_model_dir: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    proc = start_worker(
        api_model_dir,
        tmp_path_factory.mktemp("tls-worker"),
        "--served-model-name", "tiny",
        "--ssl-certfile", str(pki.worker.cert),
        "--ssl-keyfile", str(pki.worker.key),
        "--ssl-ca-certs", str(pki.ca.pem.cert),
        wait=False,
    )  # fmt: skip
    try:
        wait_serving(proc, credentials(pki, pki.gateway))
        yield proc
    finally:
        proc.stop()


def model_info(proc: Proc, creds: grpc.ChannelCredentials | None) -> str:
    channel = (
        grpc.secure_channel(proc.address, creds)
        if creds is not None
        else grpc.insecure_channel(proc.address)
    )
    with channel:
        return str(
            pb_grpc.ModelWorkerStub(channel).ModelInfo(pb.ModelInfoRequest(), timeout=5).name
        )


def test_the_worker_answers_a_client_its_ca_signed(mtls_worker: Proc, pki: Pki) -> None:
    assert model_info(mtls_worker, credentials(pki, pki.gateway)) == "tiny"


@pytest.mark.parametrize("client", ["no certificate", "another CA's certificate", "plaintext"])
def test_the_worker_refuses_other_clients(mtls_worker: Proc, pki: Pki, client: str) -> None:
    creds = {
        "no certificate": credentials(pki, None),
        "another CA's certificate": credentials(pki, pki.stranger),
        "plaintext": None,
    }[client]
    with pytest.raises(grpc.RpcError) as err:
        model_info(mtls_worker, creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_a_gateway_chats_through_a_mutual_tls_worker(mtls_worker: Proc, pki: Pki) -> None:
    settings = Settings(
        workers=mtls_worker.address,
        worker_ca=pki.ca.pem.cert,
        worker_cert=pki.gateway.cert,
        worker_key=pki.gateway.key,
        app=False,
    )
    with run_app(build_app(settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=5
        )
        assert answer.choices[0].finish_reason in ("stop", "length")
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
