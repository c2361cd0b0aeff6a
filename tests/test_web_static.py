"""The built web UI at /: cache headers, SPA fallback, and API paths that never fall back."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fireside.api.errors import install_error_handlers
from fireside.api.static import IMMUTABLE, mount_web


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>Fireside</title>")
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    (tmp_path.parent / "secret.txt").write_text("nope")
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/models")
    def models() -> dict[str, list[str]]:
        return {"data": []}

    mount_web(app, tmp_path)
    return TestClient(app)


def test_index_is_never_cached_and_client_routes_fall_back_to_it(client: TestClient) -> None:
    for path in ("/", "/c/0b5e", "/settings", "/share/tok"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "<title>Fireside</title>" in r.text
        assert r.headers["cache-control"] == "no-cache"


def test_hashed_assets_are_immutable(client: TestClient) -> None:
    r = client.get("/assets/index-abc123.js")
    assert r.status_code == 200
    assert r.text == "console.log(1)"
    assert r.headers["cache-control"] == IMMUTABLE
    assert client.get("/assets/missing.js").status_code == 404


def test_api_paths_never_fall_back(client: TestClient) -> None:
    assert client.get("/v1/models").json() == {"data": []}
    paths = ("/api/nope", "/api", "/v1/nope", "/health", "/livez", "/readyz")
    for path in (*paths, "/openapi.json/x", "/metrics"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["message"].startswith("no route"), path
    assert client.post("/").status_code == 405


def test_assets_stay_inside_the_build(client: TestClient) -> None:
    r = client.get("/assets/..%2F..%2Fsecret.txt")
    assert r.status_code == 404
    assert "nope" not in r.text


def test_without_a_build_only_the_api_is_served(tmp_path: Path) -> None:
    app = FastAPI()
    mount_web(app, tmp_path / "missing")
    assert TestClient(app).get("/").status_code == 404


def test_an_api_key_guards_the_api_but_not_the_page(tmp_path: Path) -> None:
    from fireside.api.middleware import GuardMiddleware

    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>Fireside</title>")
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/models")
    def models() -> dict[str, list[str]]:
        return {"data": []}

    mount_web(app, tmp_path)
    app.add_middleware(GuardMiddleware, api_key="secret", max_body_bytes=1 << 20)
    client = TestClient(app)
    for path in ("/", "/c/0b5e", "/login", "/share/tok", "/assets/index-abc123.js"):
        assert client.get(path).status_code == 200, path
    for path in ("/v1/models", "/tokenize", "/elsewhere"):
        assert client.get(path).status_code == 401, path
    assert client.get("/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 200
