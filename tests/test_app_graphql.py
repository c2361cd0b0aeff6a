"""GraphQL at /graphql against a running server, on both backends: the queries answer what
/api answers, the mutations change what /api shows, an answer streams to its end over a real
WebSocket (graphql-transport-ws) and resumes from an event id, and the depth, size and row
limits refuse what they must. GraphiQL is off unless the server is in development mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fireside.app.graphql import PATH, graphql_router
from fireside.app.graphql.context import MAX_ROWS
from fireside.app.graphql.schema import MAX_ALIASES, MAX_DEPTH
from fireside.settings import Settings
from tests.app_utils import HOLD, Client
from tests.graphql_utils import data, error_codes, gql, graphql_socket, results, subscribe

pytestmark = pytest.mark.usefixtures("one_thread")

REVOKED_WITHIN_S = 15  # re-checked every 5 s, after an event or a 5 s quiet spell; slack

EVENTS = """subscription($c: UUID!, $after: String) {
  answerEvents(conversationId: $c, after: $after) { id event data }
}"""
SEND = """mutation($c: UUID!, $content: String!) {
  sendMessage(conversationId: $c, content: $content) {
    questionId streamAfter answer { id status role }
  }
}"""


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    yield c
    c.close()


def cookie_headers(client: Client, server: str) -> dict[str, str]:
    return {
        "Cookie": f"fireside_session={client.http.cookies.get('fireside_session')}",
        "Origin": server,
    }


def new_conversation(client: Client, **fields: Any) -> str:
    made = data(
        client.http,
        "mutation($t: String) { createConversation(title: $t) { id title } }",
        t=fields.get("title"),
    )
    return str(made["createConversation"]["id"])


def follow(server: str, client: Client, conversation: str, after: str | None) -> list[Any]:
    with graphql_socket(server, cookie_headers(client, server)) as ws:
        subscribe(ws, "1", EVENTS, c=conversation, after=after)
        got = results(ws, "1")
    assert all("errors" not in r for r in got), got
    return [r["data"]["answerEvents"] for r in got]


def test_queries_answer_what_the_rest_api_answers(client: Client) -> None:
    client.signup("Gale")
    ids = [new_conversation(client, title=f"chat {i}") for i in range(3)]
    client.send(ids[0], "hello there")

    # Cursor pages, newest first, as GET /api/conversations pages them.
    query = """query($cursor: String) {
      conversations(limit: 2, cursor: $cursor) { data { id title } nextCursor }
    }"""
    first = data(client.http, query)["conversations"]
    second = data(client.http, query, cursor=first["nextCursor"])["conversations"]
    assert second["nextCursor"] is None
    listed = [c["id"] for c in first["data"] + second["data"]]
    rest = client.http.get("/conversations").json()["data"]
    assert listed == [c["id"] for c in rest] and sorted(listed) == sorted(ids)
    bad = gql(client.http, query, cursor="not-a-cursor")
    assert error_codes(bad) == ["BAD_USER_INPUT"] and "cursor" in bad["errors"][0]["message"]

    # One conversation: the branch on show as REST gives it, and the whole tree.
    one = data(
        client.http,
        """query($id: UUID!) { conversation(id: $id) {
            title branch { messages { id role content siblingIds } messagesBefore }
            tree { id parentId role }
        } }""",
        id=ids[0],
    )["conversation"]
    detail = client.http.get(f"/conversations/{ids[0]}").json()
    assert one["title"] == detail["title"]
    assert [(m["id"], m["role"], m["content"], m["siblingIds"]) for m in one["branch"]["messages"]] == [
        (m["id"], m["role"], m["content"], m["sibling_ids"]) for m in detail["messages"]
    ]  # fmt: skip
    question, answer = (m["id"] for m in detail["messages"])
    assert [(m["id"], m["parentId"]) for m in one["tree"]] == [(question, None), (answer, question)]
    assert data(client.http, "query($id: UUID!) { conversation(id: $id) { id } }",
                id="00000000-0000-0000-0000-000000000000")["conversation"] is None  # fmt: skip

    models = data(client.http, "{ models { data { id source ready } errors { connection } } }")
    assert models["models"]["data"] == client.http.get("/models").json()["data"]

    # The user's feedback, after rating the answer through GraphQL.
    rated = data(
        client.http,
        """mutation($m: UUID!) { rateAnswer(messageId: $m, rating: DOWN, reason: "wrong") {
            messageId rating reason } }""",
        m=answer,
    )["rateAnswer"]
    assert rated == {"messageId": answer, "rating": "DOWN", "reason": "wrong"}
    mine = data(client.http, "{ feedback { data { rating message { id content } } nextCursor } }")
    assert mine["feedback"]["data"] == [
        {"rating": "DOWN", "message": {"id": answer, "content": detail["messages"][1]["content"]}}
    ]
    assert mine["feedback"]["nextCursor"] is None
    # Each message of a branch with its rating (read for the whole page at once).
    branch = data(
        client.http,
        "query($id: UUID!) { conversation(id: $id) { branch { messages { feedback { rating } } } } }",
        id=ids[0],
    )["conversation"]["branch"]["messages"]
    assert [m["feedback"] for m in branch] == [None, {"rating": "DOWN"}]


def test_mutations_change_what_the_rest_api_shows(client: Client, chat_server: str) -> None:
    client.signup("Hal")
    c = new_conversation(client)
    sent = data(client.http, SEND, c=c, content="what is up?")["sendMessage"]
    assert sent["answer"]["status"] == "streaming" and sent["answer"]["role"] == "assistant"
    events = follow(chat_server, client, c, sent["streamAfter"])
    assert events[-1]["event"] == "done"
    assert events[-1]["data"]["message"]["id"] == sent["answer"]["id"]
    detail = client.http.get(f"/conversations/{c}").json()
    assert [m["id"] for m in detail["messages"]] == [sent["questionId"], sent["answer"]["id"]]

    renamed = data(
        client.http, 'mutation($c: UUID!) { renameConversation(id: $c, title: "Renamed") { title } }', c=c
    )  # fmt: skip
    assert renamed["renameConversation"]["title"] == "Renamed"
    assert client.http.get(f"/conversations/{c}").json()["title"] == "Renamed"
    # /api's rules hold here too: a long title, an empty question, rating a question.
    too_long = gql(client.http, "mutation($c: UUID!, $t: String!) { renameConversation(id: $c, title: $t) { id } }",
                   c=c, t="x" * 201)  # fmt: skip
    assert (
        error_codes(too_long) == ["BAD_USER_INPUT"] and "title" in too_long["errors"][0]["message"]
    )
    assert error_codes(gql(client.http, SEND, c=c, content="")) == ["BAD_USER_INPUT"]
    rate_question = gql(
        client.http,
        "mutation($m: UUID!) { rateAnswer(messageId: $m, rating: UP) { rating } }",
        m=sent["questionId"],
    )
    assert rate_question["errors"][0]["message"] == "only answers can be rated"

    deleted = data(client.http, "mutation($c: UUID!) { deleteConversation(id: $c) }", c=c)
    assert deleted["deleteConversation"] == c
    assert client.http.get(f"/conversations/{c}").status_code == 404
    again = gql(client.http, "mutation($c: UUID!) { deleteConversation(id: $c) }", c=c)
    assert error_codes(again) == ["NOT_FOUND"]


def test_a_subscription_streams_live_and_resumes_from_an_event_id(
    client: Client, chat_server: str
) -> None:
    client.signup("Ivy")
    c = new_conversation(client)
    sent = data(client.http, SEND, c=c, content=f"{HOLD} wait for me")["sendMessage"]
    with graphql_socket(chat_server, cookie_headers(client, chat_server)) as ws:
        subscribe(ws, "live", EVENTS, c=c, after=sent["streamAfter"])
        # Live: the held answer's first piece arrives while it is still being written ...
        first = results(ws, "live", limit=1)[0]["data"]["answerEvents"]
        while first["event"] != "delta":
            first = results(ws, "live", limit=1)[0]["data"]["answerEvents"]
        # ... and stopping it (a mutation over HTTP) ends the subscription after its `done`.
        assert data(client.http, "mutation($c: UUID!) { stopAnswer(conversationId: $c) }", c=c)
        rest = [r["data"]["answerEvents"] for r in results(ws, "live")]
    assert rest[-1]["event"] == "done"
    assert rest[-1]["data"]["message"]["status"] == "stopped"

    # From the start, and from an event in the middle: the log replays exactly what came after,
    # the same events the SSE resume route gives for the same Last-Event-ID.
    whole = follow(chat_server, client, c, sent["streamAfter"])
    middle = whole[len(whole) // 2]["id"]
    resumed = follow(chat_server, client, c, middle)
    assert resumed == whole[len(whole) // 2 + 1 :] and resumed[-1]["event"] == "done"
    sse = client.events("GET", f"/conversations/{c}/stream", headers={"Last-Event-ID": middle})
    assert [(e["id"], e["event"], e["data"]) for e in resumed] == [
        (e.id, e.event, e.data) for e in sse
    ]
    # Nothing running and no event id: the subscription completes at once, as SSE's body ends.
    assert follow(chat_server, client, c, None) == []
    # A bad event id is refused, as /api's 400.
    with graphql_socket(chat_server, cookie_headers(client, chat_server)) as ws:
        subscribe(ws, "bad", EVENTS, c=c, after="not-an-id")
        (refused,) = results(ws, "bad")
    assert "not an event id" in refused["errors"][0]["message"]


def test_depth_size_and_row_limits(client: Client) -> None:
    client.signup("Jay")
    for _ in range(2):
        new_conversation(client)
    deep = "{ feedback { data { message " + "{ parent " * MAX_DEPTH + "{ id }" + " }" * MAX_DEPTH
    deep += " } } }"
    refused = gql(client.http, deep)
    assert "data" not in refused or refused["data"] is None
    assert "exceeds maximum operation depth" in refused["errors"][0]["message"]

    aliases = " ".join(f"a{i}: models {{ data {{ id }} }}" for i in range(MAX_ALIASES + 1))
    refused = gql(client.http, "{ " + aliases + " }")
    assert "aliases found" in refused["errors"][0]["message"].lower()

    huge = "{ models { " + "data { id } " * 1500 + "} }"
    refused = gql(client.http, huge)
    assert "token" in refused["errors"][0]["message"].lower()

    # Nested pages multiply: 100 conversations x 5000 messages each passes no depth limit,
    # but the row budget stops it after the first few.
    costly = "{ conversations(limit: 100) { data { tree(limit: 5000) { id } } } }"
    refused = gql(client.http, costly)
    assert error_codes(refused) and set(error_codes(refused)) == {"QUERY_TOO_COSTLY"}
    assert str(MAX_ROWS) in refused["errors"][0]["message"]
    # An over-large page is refused as /api's `limit` is.
    assert error_codes(gql(client.http, "{ conversations(limit: 101) { nextCursor } }")) == [
        "BAD_USER_INPUT"
    ]


def test_anonymous_and_foreign_origin_get_an_error(client: Client, chat_server: str) -> None:
    anonymous = httpx.Client(base_url=chat_server + "/api")
    for query in ("{ conversations { data { id } } }", "{ models { data { id } } }"):
        got = gql(anonymous, query)
        assert got["data"] is None and error_codes(got) == ["UNAUTHENTICATED"]
    client.signup("Kit")
    c = new_conversation(client, title="kept")
    # A page on another site posting with the user's cookie (CSRF): refused, nothing changed.
    r = client.http.post(
        chat_server + "/graphql",
        json={"query": 'mutation($c: UUID!) { renameConversation(id: $c, title: "x") { id } }',
              "variables": {"c": c}},
        headers={"Origin": "https://evil.example"},
    )  # fmt: skip
    assert error_codes(r.json()) == ["FORBIDDEN"]
    assert client.http.get(f"/conversations/{c}").json()["title"] == "kept"
    # A form post (no JSON) is not a GraphQL request at all.
    r = client.http.post(chat_server + "/graphql", data={"query": "{ models { data { id } } }"})
    assert r.status_code == 400
    # A personal key as Bearer works as on /api.
    key = client.http.post("/keys", json={"name": "gql"}).json()["key"]
    bearer = httpx.Client(base_url=chat_server + "/api", headers={"Authorization": f"Bearer {key}"})
    found = data(bearer, "query($c: UUID!) { conversation(id: $c) { title } }", c=c)
    assert found["conversation"] == {"title": "kept"}
    anonymous.close()
    bearer.close()
    # No credentials on the socket: closed at connection_init (4403), before any operation.
    with pytest.raises(ConnectionClosed) as closed, graphql_socket(chat_server, {}):
        pass
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


def test_graphiql_only_in_development_mode(chat_server: str) -> None:
    html = {"Accept": "text/html"}
    assert httpx.get(chat_server + "/graphql", headers=html).status_code == 404
    for dev in (False, True):
        app = FastAPI()
        app.state.chat = app.state.fireside = None  # GraphiQL's page reads neither
        app.include_router(graphql_router(Settings(dev=dev)), prefix=PATH)
        r = TestClient(app).get(PATH, headers=html)
        assert (r.status_code, "graphiql" in r.text.lower()) == (
            (200, True) if dev else (404, False)
        )


def test_a_subscription_ends_when_its_session_does(client: Client, chat_server: str) -> None:
    """As /api/ws: a logout elsewhere ends a running subscription within seconds (the
    credentials are checked again every few seconds), and a foreign page gets no socket."""
    me = client.signup("Lou")
    c = new_conversation(client)
    sent = data(client.http, SEND, c=c, content=f"{HOLD} hold on")["sendMessage"]
    with graphql_socket(chat_server, cookie_headers(client, chat_server)) as ws:
        subscribe(ws, "1", EVENTS, c=c, after=sent["streamAfter"])
        assert results(ws, "1", limit=1)[0]["data"]["answerEvents"]["event"]
        other_tab = Client(chat_server)
        other_tab.http.cookies.update(client.http.cookies)
        assert other_tab.http.post("/auth/logout").status_code == 200
        other_tab.close()
        started = time.monotonic()
        ended = results(ws, "1")[-1]
        assert time.monotonic() - started < REVOKED_WITHIN_S
    assert ended["errors"][0]["message"] == "the session has ended; log in again"
    login = {"email": me["email"], "password": me["password"]}
    assert client.http.post("/auth/login", json=login).status_code == 200
    assert data(client.http, "mutation($c: UUID!) { stopAnswer(conversationId: $c) }", c=c)

    foreign = dict(cookie_headers(client, chat_server), Origin="https://evil.example")
    with pytest.raises((InvalidStatus, ConnectionClosed)), graphql_socket(chat_server, foreign):
        pass


def test_a_cross_origin_socket_follows_the_apps_origin_rule() -> None:
    """Strawberry asks the router about a handshake from another origin: the answer is the
    one /api/ws gives (FIRESIDE_ALLOWED_ORIGINS, the configured hosts), not a list of its own."""
    router = graphql_router(Settings())
    settings = Settings(allowed_origins=["http://localhost:5173"])
    request = SimpleNamespace(
        app=SimpleNamespace(state=SimpleNamespace(chat=SimpleNamespace(settings=settings))),
        headers={"host": "127.0.0.1:8000"},
    )
    allowed = router.is_websocket_origin_allowed  # type: ignore[attr-defined]
    assert allowed(request, "http://localhost:5173")
    assert not allowed(request, "https://evil.example")
