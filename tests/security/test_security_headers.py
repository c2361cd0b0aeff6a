"""Finding 11: every response carries the security headers, the page a strict CSP.

The page's own check (every screen under this policy with no violation) is the Playwright
test web/e2e/csp.spec.ts, against the real server."""

from __future__ import annotations

import httpx
import pytest

from tests.app_utils import Client

pytestmark = pytest.mark.usefixtures("one_thread")


def directives(policy: str) -> dict[str, str]:
    out = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        out[name] = value
    return out


def assert_secure(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff", r.url
    assert r.headers["referrer-policy"] == "same-origin", r.url
    csp = directives(r.headers["content-security-policy"])
    assert csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert csp["object-src"] == "'none'"


def test_every_answer_has_the_headers_and_the_page_a_strict_policy(chat_server: str) -> None:
    client = Client(chat_server)
    client.signup("Hed")
    with httpx.Client(base_url=chat_server) as anyone:
        answers = [
            anyone.get("/"),  # the page (or, unbuilt, its 404)
            anyone.get("/c/some-conversation"),
            anyone.get("/assets/nope.js"),
            anyone.get("/health"),
            anyone.get("/v1/models"),  # 401: no key
            anyone.get("/api/auth/me"),  # 401
            anyone.get("/nope/nope"),  # 404
            anyone.post("/v1/chat/completions", content=b"x" * (9 << 20)),  # 413
            anyone.get("/health", headers={"Host": "evil.example"}),  # 400
            client.http.get("/conversations"),
        ]
        for r in answers:
            assert_secure(r)
        page = directives(answers[0].headers["content-security-policy"])
        assert page["default-src"] == "'self'"
        assert page["script-src"] == "'self'"  # no inline script, no eval
        assert page["connect-src"] == "'self'"
        assert page["style-src"] == "'self'"
    client.close()
