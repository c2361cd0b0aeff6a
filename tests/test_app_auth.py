"""Accounts and who may see what, on both backends: sign-up, login, logout that revokes at
once, password change, foreign origins, and the ownership matrix (another user's ids are
404, no credentials 401) over every route that takes an id, over /api, /api/ws and /graphql."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from fireside import cli
from fireside.app.accounts import create_user
from fireside.store import accounts
from fireside.store.db import Database
from tests.app_utils import HOLD, Client, parse_sse
from tests.graphql_utils import error_codes, gql, graphql_socket, results, subscribe

pytestmark = pytest.mark.usefixtures("one_thread")

SEND = """mutation($c: UUID!, $p: UUID, $f: [UUID!]) {
  sendMessage(conversationId: $c, content: "x", parentId: $p, fileIds: $f) { streamAfter }
}"""
RATE = "mutation($m: UUID!) { rateAnswer(messageId: $m, rating: UP) { rating } }"
EVENTS = """subscription($c: UUID!, $after: String) {
  answerEvents(conversationId: $c, after: $after) { id event }
}"""


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    yield c
    c.close()


def test_signup_login_logout(client: Client, chat_server: str) -> None:
    me = client.signup("Bea")
    assert client.http.get("/auth/me").json()["email"] == me["email"]
    signup_cookie = client.http.cookies.get("fireside_session")
    # The cookie is HttpOnly and SameSite=Lax, and holds a random token, not the user's id.
    r = client.http.post("/auth/login", json={"email": me["email"], "password": me["password"]})
    assert r.status_code == 200
    set_cookie = r.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie
    assert me["id"] not in set_cookie
    cookie = client.http.cookies.get("fireside_session")
    assert cookie and signup_cookie and cookie != signup_cookie  # a new session per login

    other = httpx.Client(base_url=chat_server + "/api", cookies={"fireside_session": cookie})
    assert other.get("/auth/me").status_code == 200
    assert client.http.post("/auth/logout").status_code == 200
    # Logged out on one tab, the same session is dead on the other at once.
    assert other.get("/auth/me").status_code == 401
    assert client.http.get("/auth/me").status_code == 401
    other.close()

    wrong = client.http.post("/auth/login", json={"email": me["email"], "password": "nope-nope"})
    unknown = client.http.post("/auth/login", json={"email": "x@example.com", "password": "a"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


def test_signup_refuses_bad_and_duplicate_accounts(client: Client) -> None:
    me = client.signup("Cy")
    body = {"email": me["email"].upper(), "password": "long enough", "name": "Cy"}
    assert client.http.post("/auth/signup", json=body).status_code == 409
    for bad in (
        {"email": "not-an-email", "password": "long enough", "name": "x"},
        {"email": "a@example.com", "password": "short", "name": "x"},
        {"email": "a@example.com", "password": "long enough", "name": ""},
        {"email": "a@example.com", "password": "long enough"},
        {"email": "a@example.com", "password": "x" * 10_000, "name": "x"},
    ):
        assert client.http.post("/auth/signup", json=bad).status_code == 400, bad


def test_password_change_ends_the_other_sessions(client: Client, chat_server: str) -> None:
    me = client.signup("Di")
    elsewhere = Client(chat_server)
    login = {"email": me["email"], "password": me["password"]}
    assert elsewhere.http.post("/auth/login", json=login).status_code == 200
    r = client.http.post(
        "/auth/password", json={"current_password": "wrong-one", "new_password": "new-secret"}
    )
    assert r.status_code == 403
    r = client.http.post(
        "/auth/password", json={"current_password": me["password"], "new_password": "new-secret"}
    )
    assert r.status_code == 200
    assert client.http.get("/auth/me").status_code == 200  # this session stays
    assert elsewhere.http.get("/auth/me").status_code == 401  # the other one ended
    assert elsewhere.http.post("/auth/login", json=login).status_code == 401
    login["password"] = "new-secret"
    assert elsewhere.http.post("/auth/login", json=login).status_code == 200
    elsewhere.close()


def test_a_foreign_origin_cannot_change_anything(client: Client, chat_server: str) -> None:
    client.signup("Ed")
    evil = {"Origin": "https://evil.example"}
    assert client.http.post("/conversations", json={}, headers=evil).status_code == 403
    own = {"Origin": chat_server}
    assert client.http.post("/conversations", json={}, headers=own).status_code == 201
    # Reading is not a change; the browser's same-origin policy keeps the answer from evil.
    assert client.http.get("/conversations", headers=evil).status_code == 200
    cookie = f"fireside_session={client.http.cookies.get('fireside_session')}"
    ws_url = chat_server.replace("http", "ws") + "/api/ws"
    with pytest.raises(InvalidStatus):
        connect(ws_url, additional_headers={"Cookie": cookie, "Origin": "https://evil.example"})


def test_another_users_ids_are_not_found_and_no_login_is_401(
    client: Client, chat_server: str
) -> None:
    client.signup("Fay")
    conv = client.new_conversation()
    events = client.send(conv["id"], "private")
    question, answer = events[0].data["id"], events[-1].data["message"]["id"]
    c, m = conv["id"], answer
    preview = client.http.post("/previews", json={"html": "<p>mine</p>"}).json()["id"]
    fact = client.http.post("/memory", json={"content": "Fay keeps bees."}).json()["id"]
    routes: list[tuple[str, str, dict[str, object] | None]] = [
        ("GET", f"/previews/{preview}", None),
        ("PATCH", f"/memory/{fact}", {"content": "mine now"}),
        ("DELETE", f"/memory/{fact}", None),
        ("GET", f"/conversations/{c}", None),
        ("PATCH", f"/conversations/{c}", {"title": "mine now"}),
        ("DELETE", f"/conversations/{c}", None),
        ("POST", f"/conversations/{c}/messages", {"content": "hi"}),
        ("GET", f"/conversations/{c}/stream", None),
        ("POST", f"/conversations/{c}/stop", None),
        ("PATCH", f"/messages/{question}", {"content": "edited"}),
        ("POST", f"/messages/{m}/regenerate", None),
    ]
    intruder = Client(chat_server)
    intruder.signup("Gus")
    mine = intruder.new_conversation()
    anonymous = httpx.Client(base_url=chat_server + "/api")
    for method, path, body in routes:
        r = intruder.http.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["type"] == "not_found_error"
        r = anonymous.request(method, path, json=body)
        assert r.status_code == 401, (method, path, r.text)
        r = anonymous.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401, (method, path, r.text)
    # Someone else's message as the parent of one's own is not found either.
    r = intruder.http.post(
        f"/conversations/{mine['id']}/messages", json={"content": "x", "parent_id": question}
    )
    assert r.status_code == 404
    r = intruder.http.patch(f"/conversations/{mine['id']}", json={"current_leaf_id": answer})
    assert r.status_code == 404
    # Nor does the list show it.
    listed = [x["id"] for x in intruder.http.get("/conversations").json()["data"]]
    assert listed == [mine["id"]]

    # Over the WebSocket: a subscription to someone else's conversation is not found.
    ws_url = chat_server.replace("http", "ws") + "/api/ws"
    cookie = f"fireside_session={intruder.http.cookies.get('fireside_session')}"
    with connect(ws_url, additional_headers={"Cookie": cookie}) as ws:
        ws.send(json.dumps({"type": "subscribe", "conversation_id": c, "last_event_id": None}))
        frame = json.loads(ws.recv(timeout=30))
        assert frame["id"] is None and frame["event"] == "error"
        assert frame["data"]["error"] == "no such conversation"
    with pytest.raises(InvalidStatus):
        connect(ws_url)
    # The owner still has it all.
    assert client.http.get(f"/conversations/{c}").json()["title"] != "mine now"
    intruder.close()
    anonymous.close()


def test_websocket_subscribe_replays_and_stop_stops(client: Client, chat_server: str) -> None:
    client.signup("Hal")
    conv = client.new_conversation(max_tokens=200)
    path = f"/conversations/{conv['id']}/messages"
    with client.http.stream("POST", path, json={"content": f"{HOLD} please"}) as r:
        posted = []
        for e in parse_sse(r.iter_lines()):
            posted.append(e)
            if e.event == "delta":
                break
    ws_url = chat_server.replace("http", "ws") + "/api/ws"
    cookie = f"fireside_session={client.http.cookies.get('fireside_session')}"
    with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": chat_server}) as ws:
        ws.send("not json")
        assert json.loads(ws.recv(timeout=30))["event"] == "error"
        sub = {"type": "subscribe", "conversation_id": conv["id"], "last_event_id": posted[0].id}
        ws.send(json.dumps(sub))
        frames = [json.loads(ws.recv(timeout=30)) for _ in range(len(posted) - 1)]
        # The same events as the SSE reply, after the given id, as {"id", "event", "data"}.
        assert [(f["id"], f["event"], f["data"]) for f in frames] == [
            (e.id, e.event, e.data) for e in posted[1:]
        ]
        ws.send(json.dumps({"type": "stop", "conversation_id": conv["id"]}))
        while frames[-1]["event"] != "done":
            frames.append(json.loads(ws.recv(timeout=30)))
        assert frames[-1]["data"]["message"]["status"] == "stopped"


def test_signup_policy_and_first_admin(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'policy.db'}")
        await db.migrate()
        await db.migrate()  # a second start finds the schema current
        async with db.session() as s:
            first = await create_user(s, "root@example.com", "password1", "Root", "closed")
            assert (first.role, first.status) == ("admin", "active")  # even when closed
            with pytest.raises(Exception, match="closed"):
                await create_user(s, "b@example.com", "password1", "B", "closed")
            pending = await create_user(s, "c@example.com", "password1", "C", "approval")
            assert (pending.role, pending.status) == ("user", "pending")
            opened = await create_user(s, "d@example.com", "password1", "D", "open")
            assert (opened.role, opened.status) == ("user", "active")
            assert await accounts.count_users(s) == 3
        await db.close()

    asyncio.run(scenario())


def test_admin_create_user_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIRESIDE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("a-good-password\n"))
    # An admin made headless is an admin even when it is not the first account.
    monkeypatch.setenv("FIRESIDE_SIGNUP", "closed")
    assert cli.main(["admin", "create-user", "ops@example.com", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a-good-password\n"))
    assert (
        cli.main(["admin", "create-user", "boss@example.com", "--admin", "--password-stdin"]) == 0
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["admin", "create-user", "x@example.com", "--password-stdin"]) == 2
    assert "password" in capsys.readouterr().err

    async def roles() -> dict[str, str]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fireside.db'}")
        async with db.session() as s:
            found = {
                e: await accounts.user_by_email(s, e)
                for e in ("ops@example.com", "boss@example.com")
            }
        await db.close()
        return {e: u.role for e, u in found.items() if u is not None}

    assert asyncio.run(roles()) == {"ops@example.com": "admin", "boss@example.com": "admin"}


def test_the_authorization_matrix_over_cookie_and_bearer_key(
    client: Client, chat_server: str
) -> None:
    """Every route that takes an id (in its path, query, body or Last-Event-ID) of another
    user's: 404 to a second user, whether it sends its session cookie or its personal API key
    as Bearer; 401 with no credentials or a wrong key. Every admin route: 403 to a non-admin
    both ways, 401 anonymously. The same over the WebSocket and GraphQL."""
    client.signup("Ida")
    c = client.new_conversation()["id"]
    events = client.send(c, "private")
    question, answer = events[0].data["id"], events[-1].data["message"]["id"]
    last_event = events[-1].id
    made = client.http.post(f"/conversations/{c}/share").json()
    share, share_id = made["token"], made["id"]
    key_id = client.http.post("/keys", json={"name": "mine"}).json()["id"]
    me = client.http.get("/auth/me").json()["id"]
    preview = client.http.post("/previews", json={"html": "<p>mine</p>"}).json()["id"]
    preset = client.http.post("/presets", json={"name": "p", "system_prompt": "s"}).json()["id"]
    temporary = client.new_conversation(temporary=True)["id"]
    fact = client.http.post("/memory", json={"content": "Ida keeps bees."}).json()["id"]
    project = client.http.post("/projects", json={"name": "mine"}).json()["id"]
    upload = {"file": ("secret.txt", b"Ida's secret", "text/plain")}
    file = client.http.post("/files", files=upload, data={"conversation_id": c}).json()["id"]

    intruder = Client(chat_server)
    intruder.signup("Jo")
    mine = intruder.new_conversation()["id"]
    intruder_key = intruder.http.post("/keys", json={"name": "k"}).json()["key"]
    bearer = httpx.Client(
        base_url=chat_server + "/api", headers={"Authorization": f"Bearer {intruder_key}"}
    )
    anonymous = httpx.Client(base_url=chat_server + "/api")
    wrong_key = httpx.Client(
        base_url=chat_server + "/api", headers={"Authorization": "Bearer fs-not-a-key"}
    )

    Route = tuple[str, str, dict[str, object] | None, dict[str, str]]
    owned: list[Route] = [
        ("GET", f"/conversations/{c}", None, {}),
        ("PATCH", f"/conversations/{c}", {"title": "mine now"}, {}),
        ("DELETE", f"/conversations/{c}", None, {}),
        ("POST", f"/conversations/{c}/messages", {"content": "hi"}, {}),
        ("GET", f"/conversations/{c}/stream", None, {}),
        ("GET", f"/conversations/{c}/stream", None, {"Last-Event-ID": last_event}),
        ("POST", f"/conversations/{c}/stop", None, {}),
        ("POST", f"/conversations/{c}/share", None, {}),
        ("PATCH", f"/messages/{question}", {"content": "edited"}, {}),
        ("POST", f"/messages/{answer}/regenerate", None, {}),
        ("POST", f"/messages/{answer}/feedback", {"rating": "up"}, {}),
        ("DELETE", f"/share/{share}", None, {}),
        ("DELETE", f"/shares/{share_id}", None, {}),
        # Another user's ids in the body of a request on one's own conversation.
        ("POST", f"/conversations/{mine}/messages", {"content": "x", "parent_id": question}, {}),
        ("PATCH", f"/conversations/{mine}", {"current_leaf_id": answer}, {}),
        ("GET", f"/previews/{preview}", None, {}),
        ("DELETE", f"/presets/{preset}", None, {}),
        ("GET", f"/conversations/{temporary}", None, {}),
        ("DELETE", f"/conversations/{temporary}", None, {}),
        ("PATCH", f"/memory/{fact}", {"content": "mine now"}, {}),
        ("DELETE", f"/memory/{fact}", None, {}),
        ("GET", f"/projects/{project}", None, {}),
        ("PATCH", f"/projects/{project}", {"name": "mine now"}, {}),
        ("DELETE", f"/projects/{project}", None, {}),
        ("DELETE", f"/projects/{project}?delete_conversations=true", None, {}),
        ("GET", f"/conversations?project_id={project}", None, {}),
        ("POST", "/conversations", {"project_id": project}, {}),
        ("PATCH", f"/conversations/{mine}", {"project_id": project}, {}),
        ("GET", f"/files/{file}", None, {}),
        ("GET", f"/files/{file}/content", None, {}),
        ("DELETE", f"/files/{file}", None, {}),
        ("GET", f"/files?conversation_id={c}", None, {}),
        ("GET", f"/files?project_id={project}", None, {}),
        ("POST", f"/conversations/{mine}/messages", {"content": "x", "file_ids": [file]}, {}),
    ]
    graphql_owned: list[tuple[str, dict[str, object]]] = [
        ('mutation($c: UUID!) { renameConversation(id: $c, title: "mine") { id } }', {"c": c}),
        ("mutation($c: UUID!) { deleteConversation(id: $c) }", {"c": c}),
        ("mutation($c: UUID!) { stopAnswer(conversationId: $c) }", {"c": c}),
        (SEND, {"c": c, "p": None, "f": None}),
        (SEND, {"c": mine, "p": question, "f": None}),  # another's id in one's own chat
        (SEND, {"c": mine, "p": None, "f": [file]}),
        (RATE, {"m": answer}),
        ("mutation($p: UUID!) { createConversation(projectId: $p) { id } }", {"p": project}),
        ("query($p: UUID!) { conversations(projectId: $p) { data { id } } }", {"p": project}),
    ]
    admin: list[Route] = [
        ("GET", "/admin/users", None, {}),
        ("PATCH", f"/admin/users/{me}", {"status": "disabled"}, {}),
        ("GET", "/admin/usage", None, {}),
        ("GET", "/admin/feedback/export", None, {}),
        ("GET", "/admin/connections", None, {}),
        ("PUT", "/admin/connections", {"data": []}, {}),
        ("GET", "/admin/settings", None, {}),
        ("PATCH", "/admin/settings", {"signup": "closed"}, {}),
        ("GET", "/admin/improve", None, {}),
        ("GET", "/admin/jobs", None, {}),
        ("POST", "/admin/jobs", {"method": "dpo", "lora_rank": 8, "steps": 2}, {}),
        ("GET", f"/admin/jobs/{uuid.uuid4()}", None, {}),
        ("POST", f"/admin/jobs/{uuid.uuid4()}/cancel", None, {}),
        ("GET", f"/admin/jobs/{uuid.uuid4()}/events", None, {}),
        ("GET", "/admin/versions", None, {}),
        ("POST", f"/admin/versions/{uuid.uuid4()}/serve", None, {}),
    ]
    # Keys are made and revoked from a session only: a Bearer key gets 403 before any id
    # is looked at; a session gets 404 for another's key.
    keys: list[Route] = [("DELETE", f"/keys/{key_id}", None, {})]
    for method, path, body, _ in keys:
        assert intruder.http.request(method, path, json=body).status_code == 404
        assert bearer.request(method, path, json=body).status_code == 403
    assert bearer.post("/keys", json={"name": "minted"}).status_code == 403
    # The OpenID Connect link is authorized by its sealed cookie alone, which no caller here
    # has; on this server (no provider configured) it does not exist for anyone.
    for who in (intruder.http, bearer, anonymous):
        assert who.post("/auth/oidc/link", json={"password": "x"}).status_code == 404
    for who in (intruder.http, bearer):
        for method, path, body, headers in owned:
            r = who.request(method, path, json=body, headers=headers)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["type"] == "not_found_error"
        # An upload into another user's chat or project (a multipart form).
        for place in ({"conversation_id": c}, {"project_id": project}):
            r = who.post("/files", files=upload, data=place)
            assert r.status_code == 404, (place, r.text)
        for method, path, body, headers in admin:
            r = who.request(method, path, json=body, headers=headers)
            assert r.status_code == 403, (method, path, r.text)
    for who in (intruder.http, bearer):  # lists of one's own: never another user's
        assert who.get("/shares").json()["data"] == []
        assert preset not in [p["id"] for p in who.get("/presets").json()["data"]]
        assert who.get("/memory").json()["data"] == []
        assert who.get("/projects").json()["data"] == []
        assert who.get("/files").json()["data"] == []
    assert [f["content"] for f in client.http.get("/memory").json()["data"]] == ["Ida keeps bees."]
    own_only: list[Route] = [  # no id: anyone logged in, nobody anonymous
        ("GET", "/shares", None, {}),
        ("GET", "/presets", None, {}),
        ("POST", "/presets", {"name": "p", "system_prompt": "s"}, {}),
        ("GET", "/projects", None, {}),
        ("POST", "/projects", {"name": "x"}, {}),
        ("POST", "/run", {"language": "python", "code": "print(1)"}, {}),
        ("POST", "/previews", {"html": "<p>x</p>"}, {}),
        ("GET", "/memory", None, {}),
        ("POST", "/memory", {"content": "x"}, {}),
        ("GET", "/settings", None, {}),
        ("PATCH", "/settings", {"about_me": "x"}, {}),
        ("GET", "/files", None, {}),
    ]
    for method, path, body, headers in [*owned, *admin, *keys, *own_only]:
        r = anonymous.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (method, path, r.text)
        wrong = dict(headers, Authorization="Bearer fs-not-a-key")
        r = anonymous.request(method, path, json=body, headers=wrong)
        assert r.status_code == 401, (method, path, r.text)
    for headers in ({}, {"Authorization": "Bearer fs-not-a-key"}):
        assert anonymous.post("/files", files=upload, headers=headers).status_code == 401
    # Ida's file is untouched by all of it.
    assert client.http.get(f"/files/{file}/content").content == b"Ida's secret"

    # The WebSocket, by session cookie and by Bearer key: subscribing to or stopping another
    # user's conversation is "no such conversation"; no credentials or a wrong key, no socket.
    ws_url = chat_server.replace("http", "ws") + "/api/ws"
    cookie = f"fireside_session={intruder.http.cookies.get('fireside_session')}"
    for credentials in ({"Cookie": cookie}, {"Authorization": f"Bearer {intruder_key}"}):
        with connect(ws_url, additional_headers=credentials) as ws:
            for frame_out in (
                {"type": "subscribe", "conversation_id": c, "last_event_id": last_event},
                {"type": "subscribe", "conversation_id": c, "last_event_id": None},
                {"type": "stop", "conversation_id": c},
            ):
                ws.send(json.dumps(frame_out))
                frame = json.loads(ws.recv(timeout=30))
                assert frame["event"] == "error", (credentials.keys(), frame_out, frame)
                assert frame["data"]["error"] == "no such conversation"
    for credentials in ({}, {"Authorization": "Bearer fs-not-a-key"}):
        with pytest.raises(InvalidStatus):
            connect(ws_url, additional_headers=credentials)

    # GraphQL, by session cookie and by Bearer key: another user's id reads as null in a
    # query and as "no such ..." (NOT_FOUND) in a mutation or subscription; anonymous or a
    # wrong key is UNAUTHENTICATED, and a socket without credentials is closed at once.
    rated = gql(client.http, RATE, m=answer)
    assert "errors" not in rated, rated
    for who in (intruder.http, bearer):
        got = gql(who, "query($c: UUID!) { conversation(id: $c) { title tree { content } } }", c=c)
        assert got == {"data": {"conversation": None}}, got
        got = gql(who, "{ conversations { data { id } } feedback { data { messageId } } }")
        assert got["data"]["conversations"]["data"] == [{"id": mine}], got
        assert got["data"]["feedback"]["data"] == [], got
        for query, variables in graphql_owned:
            got = gql(who, query, **variables)
            assert got["data"] is None and error_codes(got) == ["NOT_FOUND"], (query, got)
    for query, variables in [*graphql_owned, ("{ models { data { id } } }", {})]:
        for who in (anonymous, wrong_key):
            got = gql(who, query, **variables)
            assert got["data"] is None and error_codes(got) == ["UNAUTHENTICATED"], (query, got)
    for credentials in ({"Cookie": cookie}, {"Authorization": f"Bearer {intruder_key}"}):
        with graphql_socket(chat_server, credentials) as ws:
            for n, after in enumerate((last_event, None, "")):
                subscribe(ws, str(n), EVENTS, c=c, after=after)
                (refused,) = results(ws, str(n))
                assert refused["errors"][0]["message"] == "no such conversation", refused
    for credentials in ({}, {"Authorization": "Bearer fs-not-a-key"}):
        with pytest.raises(ConnectionClosed), graphql_socket(chat_server, credentials):
            pass

    # Nothing changed for the owner: the conversation, its share and key are all there.
    got = client.http.get(f"/conversations/{c}").json()
    assert got["title"] != "mine now" and [m["id"] for m in got["messages"]] == [question, answer]
    assert client.http.get(f"/share/{share}").status_code == 200
    assert [s["id"] for s in client.http.get("/shares").json()["data"]] == [share_id]
    assert [k["id"] for k in client.http.get("/keys").json()["data"]] == [key_id]
    assert client.http.get("/auth/me").status_code == 200
    for http in (intruder.http, bearer, anonymous, wrong_key):
        http.close()
