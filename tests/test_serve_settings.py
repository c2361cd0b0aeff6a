"""`fireside serve`'s engine flags reach the engine; bad values are refused up front."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, OpenAI

from fireside.cli import main
from fireside.server import build_app
from fireside.settings import Settings
from tests.api_utils import run_app


def test_engine_flags_size_the_served_engine(api_model_dir: Path) -> None:
    settings = Settings(
        model=str(api_model_dir),
        served_model_name="tiny",
        max_model_len=64,
        max_num_seqs=3,
        kv_cache_gib=0.01,
        pack_weights=False,
    )
    with run_app(build_app(settings)) as url:
        models = httpx.get(f"{url}/v1/models").json()["data"]
        assert models[0]["max_model_len"] == 64
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        with pytest.raises(BadRequestError, match="maximum context length is 64"):
            client.completions.create(model="tiny", prompt=[1] * 40, max_tokens=30)
        reply = client.completions.create(model="tiny", prompt=[1] * 40, max_tokens=5, n=3)
        assert len(reply.choices) == 3
        with pytest.raises(BadRequestError, match="n must be between 1 and 3"):
            client.completions.create(model="tiny", prompt=[1] * 4, max_tokens=5, n=4)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-num-seqs", "0"], "max_num_seqs"),
        (["--max-model-len", "-5"], "max_model_len"),
        (["--kv-cache-gib", "0"], "kv_cache_gib"),
    ],
)
def test_bad_engine_flags_are_refused_before_loading(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and message in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ssl-certfile", "/etc/hostname"], "give both --ssl-certfile and --ssl-keyfile"),
        (["--ssl-keyfile", "/etc/hostname"], "give both --ssl-certfile and --ssl-keyfile"),
        (
            ["--ssl-certfile", "/nope/cert.pem", "--ssl-keyfile", "/etc/hostname"],
            "--ssl-certfile '/nope/cert.pem': no such file",
        ),
        (["--log-format", "xml"], "invalid choice"),
    ],
)
def test_bad_tls_and_log_flags_are_refused_before_loading(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["serve", *flags])
    except SystemExit as e:  # argparse's own refusal (a choice not offered)
        code = int(str(e.code))
    assert code == 2
    assert message in capsys.readouterr().err
