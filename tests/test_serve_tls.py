"""`fireside serve --ssl-certfile --ssl-keyfile`, end to end over HTTPS with a certificate
authority this test makes: the official openai SDK given the CA, the app's SSE stream and its
WebSocket over wss, a Secure session cookie; JSON logs whose lines carry the request's id."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from websockets.sync.client import connect

from tests.app_utils import parse_sse
from tests.test_app_restart import _free_port
from tests.tls_utils import make_ca

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class HttpsServer:
    url: str
    ca: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def https_server(
    api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HttpsServer]:
    tmp = tmp_path_factory.mktemp("https")
    ca = make_ca(tmp / "ca")
    server = ca.issue(tmp, "server")
    port = _free_port()
    log = tmp / "server.log"
    env = dict(
        os.environ,
        FIRESIDE_DATA_DIR=str(tmp / "data"),
        FIRESIDE_APP_MAX_TOKENS="6",
        FIRESIDE_LOG_FORMAT="json",
        OMP_NUM_THREADS="1",
    )
    command = [sys.executable, "-m", "fireside", "serve", "--model", str(api_model_dir)]
    command += ["--served-model-name", "tiny", "--port", str(port), "--device", "cpu"]
    command += ["--ssl-certfile", str(server.cert), "--ssl-keyfile", str(server.key)]
    with log.open("wb") as err:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stderr=err)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if (
                    httpx.get(
                        f"{url}/readyz", verify=ssl.create_default_context(cafile=str(ca.cert))
                    ).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"fireside serve exited:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("fireside serve over HTTPS did not become ready")
            time.sleep(0.2)
        yield HttpsServer(url, ca.cert, log, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_openai_sdk_over_https_verifies_the_ca(https_server: HttpsServer) -> None:
    # The SDK's own HTTP client (httpx2 in openai 3), told to trust the test's CA.
    with openai.DefaultHttpxClient(verify=https_server.trust()) as http:
        client = openai.OpenAI(base_url=f"{https_server.url}/v1", api_key="-", http_client=http)
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert answer.choices[0].finish_reason in ("length", "stop")
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
        stream = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
        )
        chunks = list(stream)
        assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")
    # Without the CA the certificate is not trusted: the client refuses the connection.
    with openai.DefaultHttpxClient() as untrusting:
        client = openai.OpenAI(
            base_url=f"{https_server.url}/v1", api_key="-", http_client=untrusting, max_retries=0
        )
        with pytest.raises(openai.APIConnectionError):
            client.models.list()


def test_app_sse_and_websocket_over_tls(https_server: HttpsServer) -> None:
    url = https_server.url
    with httpx.Client(base_url=f"{url}/api", verify=https_server.trust(), timeout=60) as http:
        r = http.post(
            "/auth/signup",
            json={"email": "tls@example.com", "password": "secret-pass", "name": "Tls"},
        )
        assert r.status_code == 201, r.text
        # Served over TLS, the session cookie is Secure: a browser never sends it over http.
        cookie = r.headers["set-cookie"]
        assert "fireside_session=" in cookie and "secure" in cookie.lower()
        conv = http.post("/conversations", json={}).json()
        path = f"/conversations/{conv['id']}/messages"
        with http.stream("POST", path, json={"content": "Over TLS"}) as resp:
            assert resp.status_code == 200
            events = list(parse_sse(resp.iter_lines()))
        assert events[-1].event == "done"
        session = http.cookies.get("fireside_session")

    context = https_server.trust()
    ws_url = url.replace("https://", "wss://") + "/api/ws"
    headers = {"Cookie": f"fireside_session={session}", "Origin": url}
    with connect(ws_url, ssl=context, additional_headers=headers) as ws:
        subscribe = {"type": "subscribe", "conversation_id": conv["id"]}
        ws.send(json.dumps(subscribe | {"last_event_id": events[0].id}))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["event"] != "end":
            frames.append(json.loads(ws.recv(timeout=30)))
    # The same events the SSE stream gave after the first, then the end of the subscription.
    assert [f["id"] for f in frames[:-1]] == [e.id for e in events[1:]]
    assert frames[-2]["event"] == "done"


def test_json_logs_carry_the_request_id(https_server: HttpsServer) -> None:
    verify = https_server.trust()
    r = httpx.get(
        f"{https_server.url}/v1/models", headers={"X-Request-ID": "trace-42"}, verify=verify
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
    # An id that could forge log lines is replaced by a fresh one.
    r = httpx.get(f"{https_server.url}/livez", headers={"X-Request-ID": "bad id\tx"}, verify=verify)
    fresh = r.headers["x-request-id"]
    assert fresh != "bad id\tx" and len(fresh) == 32
    # A share link's token never reaches the log, in JSON fields either.
    httpx.get(
        f"{https_server.url}/api/share/tok-s3cret",
        headers={"X-Request-ID": "share-1"},
        verify=verify,
    )
    deadline = time.monotonic() + 10
    while True:
        lines = https_server.log_lines()
        access = [line for line in lines if line.get("logger") == "uvicorn.access"]
        ids = {line.get("request_id"): line for line in access}
        if {"trace-42", fresh, "share-1"} <= ids.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    line = ids["trace-42"]
    assert line["path"] == "/v1/models" and line["status"] == 200 and line["level"] == "INFO"
    assert {"ts", "msg", "logger"} <= line.keys()
    assert ids[fresh]["path"] == "/livez"
    assert ids["share-1"]["path"] == "/api/share/[redacted]"
    assert "s3cret" not in https_server.log.read_text()
    # Lines outside any request (start-up) have a null id, and every line is JSON.
    assert any(x.get("request_id") is None and x["logger"].startswith("uvicorn") for x in lines)
