"""Running the code of an answer, on both backends: Python in the sandbox (output, exit
status, files written), its limits (size, rate, no sandbox = 503, never unsandboxed), and HTML
previews kept for their owner alone under a policy of their own."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fireside.sandbox import unavailable_reason
from tests.app_utils import Backend, Client, chat_settings, run_chat_server
from tests.security.test_security_headers import directives

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5f3d1f40000000049454e44ae426082"
)


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    c.signup("Runa")
    yield c
    c.close()


def test_a_program_runs_and_its_files_come_back(client: Client) -> None:
    code = (
        "import sys\n"
        "print('six times seven is', 6 * 7)\n"
        "print('careful', file=sys.stderr)\n"
        f"open('dot.png', 'wb').write({TINY_PNG!r})\n"
        "open('notes.txt', 'w').write('hello')\n"
    )
    r = client.http.post("/run", json={"language": "python", "code": code})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["stdout"] == "six times seven is 42\n"
    assert got["stderr"] == "careful\n"
    assert got["exit_status"] == 0
    assert [(f["name"], f["content_type"], f["size"]) for f in got["files"]] == [
        ("dot.png", "image/png", len(TINY_PNG)),
        ("notes.txt", "text/plain", 5),
    ]
    assert base64.b64decode(got["files"][0]["data_base64"]) == TINY_PNG


def test_failures_and_kills_say_so(client: Client) -> None:
    r = client.http.post("/run", json={"language": "python", "code": "import sys\nsys.exit(3)"})
    assert r.json()["exit_status"] == 3
    r = client.http.post("/run", json={"language": "python", "code": "1 / 0"})
    assert r.json()["exit_status"] == 1
    assert "ZeroDivisionError" in r.json()["stderr"]
    r = client.http.post("/run", json={"language": "python", "code": "while True:\n    pass\n"})
    assert r.status_code == 200
    # The CPU limit (5 s) bites first on an idle machine, the wall clock (10 s) on a busy one.
    assert r.json()["exit_status"] in (
        "killed (CPU time limit of 5 s)",
        "killed (time limit of 10 s)",
    )


def test_bad_requests_are_refused_clearly(client: Client) -> None:
    r = client.http.post("/run", json={"language": "javascript", "code": "1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "language"
    r = client.http.post("/run", json={"language": "python", "code": "x = 1\n" * 20_000})
    assert r.status_code == 413
    assert "at most 100,000" in r.json()["error"]["message"]
    r = client.http.post("/previews", json={"html": "x" * 1_000_001})
    assert r.status_code == 413
    assert client.http.post("/run", json={"code": "1"}).status_code == 400


def test_preview_is_its_owners_alone_and_sandboxed(client: Client, chat_server: str) -> None:
    html = "<p id=x>hi</p><script>document.body.append('ran')</script>"
    r = client.http.post("/previews", json={"html": html})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["url"] == f"/api/previews/{created['id']}"
    r = client.http.get(f"/previews/{created['id']}")
    assert r.status_code == 200 and r.text == html
    assert r.headers["content-type"].startswith("text/html")
    csp = directives(r.headers["content-security-policy"])
    assert csp["sandbox"] == "allow-scripts"  # an opaque origin: no cookies, no API
    assert csp["default-src"] == "'none'"  # connects to nothing, loads nothing
    assert csp["frame-ancestors"] == "'self'"
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert "no-store" in r.headers["cache-control"]

    other = Client(chat_server)
    other.signup("Nosy")
    assert other.http.get(f"/previews/{created['id']}").status_code == 404
    assert other.http.get("/previews/not-a-preview").status_code == 404
    assert other.http.get("/previews/bad.id").status_code == 400
    other.close()
    with httpx.Client(base_url=chat_server + "/api") as anonymous:
        assert anonymous.get(f"/previews/{created['id']}").status_code == 401
        assert anonymous.post("/previews", json={"html": html}).status_code == 401
        assert anonymous.post("/run", json={"language": "python", "code": "1"}).status_code == 401
        r = anonymous.post(
            "/run",
            json={"language": "python", "code": "1"},
            headers={"Authorization": "Bearer nope"},
        )
        assert r.status_code == 401
    # The page itself still cannot be framed.
    assert (
        directives(client.http.get("/auth/me").headers["content-security-policy"])[
            "frame-ancestors"
        ]
        == "'none'"
    )


def test_a_personal_key_runs_code_too(client: Client, chat_server: str) -> None:
    key = client.http.post("/keys", json={"name": "runner"}).json()["key"]
    with httpx.Client(base_url=chat_server + "/api", timeout=60) as keyed:
        r = keyed.post(
            "/run",
            json={"language": "python", "code": "print(2 + 2)"},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 200 and r.json()["stdout"] == "4\n"


@pytest.fixture
def strict_server(chat_backend: Backend, api_model_dir: Path) -> Iterator[str]:
    settings = chat_settings(chat_backend, run_per_user=2, run_window_s=600)
    with run_chat_server(api_model_dir, settings) as url:
        yield url


def test_runs_are_rate_limited_per_user_and_never_unsandboxed(
    strict_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = Client(strict_server), Client(strict_server)
    first.signup("Rapid")
    second.signup("Calm")
    run = {"language": "python", "code": "print(1)"}
    assert [first.http.post("/run", json=run).status_code for _ in range(2)] == [200, 200]
    r = first.http.post("/run", json=run)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "too many runs" in r.json()["error"]["message"]
    assert second.http.post("/run", json=run).status_code == 200  # per user

    # No bwrap on PATH: a 503 that says why, and the program does not run anywhere.
    unavailable_reason.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        r = second.http.post("/run", json=run)
        assert r.status_code == 503, r.text
        assert "bubblewrap" in r.json()["error"]["message"]
        assert "retry-after" in r.headers
    finally:
        monkeypatch.undo()
        unavailable_reason.cache_clear()
    first.close()
    second.close()
