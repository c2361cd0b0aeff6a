"""Gateway and worker flags: mistakes stop start-up with one line naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fireside.cli import main
from fireside.errors import FiresideError
from fireside.server import build_app
from fireside.settings import Settings


@pytest.mark.parametrize("workers", ["gpu1:50051,gpu2", "gpu1:port", ":50051", "gpu1:70000"])
def test_a_malformed_worker_address_is_named(workers: str) -> None:
    bad = workers.split(",")[-1]
    with pytest.raises(FiresideError, match=f"{bad!r} is not host:port"):
        Settings(workers=workers).worker_addresses()


def test_worker_addresses_are_split_and_trimmed() -> None:
    settings = Settings(workers=" gpu1:50051, 10.0.0.2:7000 ,")
    assert settings.worker_addresses() == ["gpu1:50051", "10.0.0.2:7000"]


def test_a_gateway_loads_no_model_of_its_own() -> None:
    with pytest.raises(FiresideError, match="the workers hold the model"):
        build_app(Settings(workers="127.0.0.1:1", model="some/dir", served_model_name="m"))


def test_a_client_certificate_needs_its_key() -> None:
    settings = Settings(workers="127.0.0.1:1", worker_ca="ca.pem", worker_cert="gw.pem")
    with pytest.raises(FiresideError, match="--worker-cert and --worker-key go together"):
        settings.worker_addresses()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ssl-ca-certs", "ca.pem"], "--ssl-ca-certs needs --ssl-certfile and --ssl-keyfile"),
        (["--ssl-certfile", "c.pem"], "--ssl-certfile and --ssl-keyfile go together"),
    ],
)
def test_worker_tls_flags_are_checked_first(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "--port", "0", *flags]) == 2
    assert capsys.readouterr().err.strip() == f"fireside: error: {message}"


def test_a_worker_whose_model_cannot_load_exits_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not alive and never ready: the process ends, so an orchestrator shows the reason."""
    missing = tmp_path / "nope"
    assert main(["worker", "--model", str(missing), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fireside: error: {str(missing)!r} is not a model")
