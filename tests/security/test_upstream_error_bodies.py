"""Finding 16: a connection's non-200 body (up to 300 characters) reached the user's chat.
Against a real local HTTP server answering 502 with a secret in its body: the user reads only
that the model service answered 502; the body is in the server's log for the admin."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fireside.settings import ConnectionSetting
from tests.app_utils import Backend, Client, chat_settings, run_chat_server

pytestmark = pytest.mark.usefixtures("one_thread")

SECRET = "upstream-secret-key=sk-live-5f2a91"


class Failing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = f"Bad gateway: backend 10.0.0.7 refused; {SECRET}".encode()
        self.send_response(502)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_the_user_reads_the_status_and_the_admin_log_the_body(
    chat_backend: Backend,
    api_model_dir: Path,
    upstream: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = chat_settings(
        chat_backend, connections=[ConnectionSetting(name="flaky", base_url=upstream)]
    )
    with caplog.at_level(logging.WARNING), run_chat_server(api_model_dir, settings) as url:
        client = Client(url)
        client.signup("Uma")
        conversation = client.new_conversation(model="flaky/big-model")
        events = client.send(conversation["id"], "hello")
        stored = client.http.get(f"/conversations/{conversation['id']}").json()
        client.close()

    seen = json.dumps([e.data for e in events]) + json.dumps(stored)
    assert SECRET not in seen and "10.0.0.7" not in seen
    answer = stored["messages"][-1]
    assert answer["status"] == "error"
    assert "answered 502" in answer["error"], answer["error"]
    assert any(SECRET in r.getMessage() for r in caplog.records), "the admin's log has the body"
