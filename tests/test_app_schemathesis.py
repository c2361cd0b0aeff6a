"""schemathesis fuzzes every /api operation of the chat app AUTHENTICATED, on both backends:
malformed bodies, wrong types, huge strings and odd characters get a 4xx, never a 5xx.

The fuzzing user is an administrator (so the admin routes read their bodies too) with a
personal API key sent as a Bearer header, and the ids in paths are, where the route takes
one, a real conversation, message or project of that user's, so the fuzzed bodies get past the
ownership check to the code that reads them. Each backend gets a server and a database of
its own: fuzzed admin settings (the sign-up policy, connections) must not reach other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_utils import assert_request_id, request_id_headers
from tests.app_utils import (
    REDIS_URL,
    Backend,
    Client,
    chat_settings,
    make_admin,
    postgres_database,
    redis_available,
    run_chat_server,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# How many cases each operation gets: enough for every field to be fuzzed a few ways, few
# enough that both backends take a few minutes at most on two cores.
MAX_EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# These answer text/event-stream, documented as a string; schemathesis reads the events as
# objects and so cannot check them against it. Every other check still applies to them.
STREAMING = {
    ("POST", "/api/conversations/{conversation_id}/messages"),
    ("GET", "/api/conversations/{conversation_id}/stream"),
    ("POST", "/api/messages/{message_id}/regenerate"),
    ("PATCH", "/api/messages/{message_id}"),
    ("GET", "/api/admin/jobs/{job_id}/events"),
}


@dataclass
class Fuzzed:
    url: str
    key: str  # the admin's personal API key
    http: httpx.Client  # logged in as the admin (cookie), to seed what the cases point at

    def fresh_conversation(self) -> str:
        r = self.http.post("/conversations", json={})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def fresh_message(self) -> str:
        """A user message with its answer; returns the question's id."""
        conversation = self.fresh_conversation()
        r = self.http.post(f"/conversations/{conversation}/messages", json={"content": "hi"})
        assert r.status_code == 200, r.text
        got = self.http.get(f"/conversations/{conversation}").json()
        return str(got["messages"][0]["id"])

    def fresh_fact(self) -> str:
        r = self.http.post("/memory", json={"content": "fuzz"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def fresh_project(self) -> str:
        r = self.http.post("/projects", json={"name": "fuzz", "instructions": "be kind"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def fresh_preview(self) -> str:
        r = self.http.post("/previews", json={"html": "<p>fuzz</p>"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def fresh_file(self) -> str:
        r = self.http.post("/files", files={"file": ("fuzz.txt", b"fuzz text", "text/plain")})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def fresh_preset(self) -> str:
        r = self.http.post("/presets", json={"name": "fuzz", "system_prompt": "fuzz"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, api_model_dir: Path
) -> Iterator[Fuzzed]:
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        yield from _serve(Backend("sqlite", data_dir), api_model_dir)
        return
    if not redis_available():
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    with postgres_database() as url:
        yield from _serve(Backend("postgres", data_dir, url, REDIS_URL), api_model_dir)


def _serve(backend: Backend, model_dir: Path) -> Iterator[Fuzzed]:
    # Runs and previews are fuzzed (and previews made for the GETs) past the default rate.
    with run_chat_server(model_dir, chat_settings(backend, run_per_user=10_000)) as url:
        admin = make_admin(backend)
        client = Client(url)
        assert client.http.post("/auth/login", json=admin).status_code == 200
        r = client.http.post("/keys", json={"name": "fuzz"})
        assert r.status_code == 201, r.text
        yield Fuzzed(url, r.json()["key"], client.http)
        client.close()


def _point_at_real_ids(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    params: dict[str, Any] = case.path_parameters or {}
    if "conversation_id" in params:
        params["conversation_id"] = fuzzed.fresh_conversation()
    if "message_id" in params:
        params["message_id"] = fuzzed.fresh_message()
    if "preview_id" in params:
        params["preview_id"] = fuzzed.fresh_preview()
    if "preset_id" in params:
        params["preset_id"] = fuzzed.fresh_preset()
    if "fact_id" in params:
        params["fact_id"] = fuzzed.fresh_fact()
    if "project_id" in params:
        params["project_id"] = fuzzed.fresh_project()
    if "file_id" in params:
        params["file_id"] = fuzzed.fresh_file()


def test_every_api_operation_survives_fuzzed_input(fuzzed: Fuzzed) -> None:
    api = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    operations = [
        result.ok() for result in api.get_all_operations() if result.ok().path.startswith("/api/")
    ]
    assert {op.path for op in operations} >= {
        "/api/conversations/{conversation_id}/messages",
        "/api/messages/{message_id}",
        "/api/import",
        "/api/admin/users/{user_id}",
        "/api/keys/{key_id}",
        "/api/run",
        "/api/previews/{preview_id}",
        "/api/presets/{preset_id}",
        "/api/memory/{fact_id}",
        "/api/projects/{project_id}",
        "/api/files",
        "/api/files/{file_id}",
        "/api/files/{file_id}/content",
        "/api/admin/jobs",
        "/api/admin/jobs/{job_id}/events",
        "/api/admin/versions/{version_id}/serve",
    }
    headers = {"Authorization": f"Bearer {fuzzed.key}"}
    for op in operations:
        checks = CHECKS
        if (op.method.upper(), op.path) in STREAMING:
            checks = [c for c in CHECKS if c is not response_schema_conformance]
        # Logging out with a key ends no session (the key stays valid), so nothing is
        # excluded: the fuzzing identity outlives every case.
        _fuzz(op, checks, fuzzed, headers)


def _fuzz(op: Any, checks: list[Any], fuzzed: Fuzzed, headers: dict[str, str]) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin lags pytest's internals.
    @given(case=op.as_strategy(), request_id=request_id_headers())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    def check(case: schemathesis.Case, request_id: str | None) -> None:
        _point_at_real_ids(case, fuzzed)
        sent = headers if request_id is None else {**headers, "X-Request-ID": request_id}
        response = case.call_and_validate(checks=checks, headers=sent, timeout=60)
        assert_request_id(response.headers, request_id)

    check()


# What a GraphQL error may say it is: a refusal /api would answer 4xx, or a validation error
# (no `path`: the query itself was refused). INTERNAL_SERVER_ERROR (a masked failure) never.
GRAPHQL_CODES = {"BAD_USER_INPUT", "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "CONFLICT",
                 "RATE_LIMITED", "QUERY_TOO_COSTLY"}  # fmt: skip


def test_random_graphql_operations_never_fail_the_server(fuzzed: Fuzzed) -> None:
    """hypothesis-graphql writes operations from /graphql's own schema, each root field in
    turn (as the REST run goes operation by operation), with ids both real (the fuzzing user's
    conversation, question and answer) and random: every answer is a GraphQL response whose
    errors are refusals, never a 5xx or a masked failure."""
    import graphql
    from hypothesis import strategies as st
    from hypothesis_graphql import mutations, nodes, queries

    from fireside.app.graphql.schema import schema

    question = fuzzed.fresh_message()
    conversation = fuzzed.http.get("/conversations").json()["data"][0]["id"]
    answer = fuzzed.http.get(f"/conversations/{conversation}").json()["messages"][-1]["id"]
    real = st.sampled_from([conversation, question, answer])
    scalars = {"UUID": st.one_of(real, real, st.uuids().map(str)).map(nodes.String)}
    sdl = graphql.build_schema(schema.as_str())
    assert sdl.query_type is not None and sdl.mutation_type is not None
    # Deleting last: the other mutations get the real conversation first.
    ordered = sorted(sdl.mutation_type.fields, key=lambda name: name == "deleteConversation")
    strategies = [queries(sdl, fields=[f], custom_scalars=scalars) for f in sdl.query_type.fields]
    strategies += [mutations(sdl, fields=[f], custom_scalars=scalars) for f in ordered]
    http = httpx.Client(headers={"Authorization": f"Bearer {fuzzed.key}"}, timeout=60)
    for strategy in strategies:
        _fuzz_graphql(strategy, f"{fuzzed.url}/graphql", http)
    http.close()


def _fuzz_graphql(strategy: Any, url: str, http: httpx.Client) -> None:
    @given(operation=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    def check(operation: str) -> None:
        r = http.post(url, json={"query": operation})
        assert r.status_code < 500, (operation, r.text)
        assert r.headers["content-type"].startswith("application/json"), (operation, r.text)
        for error in r.json().get("errors", []):
            code = error.get("extensions", {}).get("code")
            assert "path" not in error or code in GRAPHQL_CODES, (operation, error)

    check()


def test_a_connection_with_a_control_character_is_refused(fuzzed: Fuzzed) -> None:
    # Found by the fuzzing above: such a URL was stored, then /api/models failed on it (500).
    for bad in (
        {"name": "x", "base_url": "http://a\x18b"},
        {"name": "x", "base_url": "http://a.example", "api_key": "a\nb"},
    ):
        r = fuzzed.http.put("/admin/connections", json={"data": [bad]})
        assert r.status_code == 400, r.text
    assert fuzzed.http.get("/models").status_code == 200
