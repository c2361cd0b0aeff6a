"""Projects, on both backends: create, rename, list; move a chat into one and out of it; a
chat in a project answers with the project's instructions in its prompt; delete a project
with its chats or moving them out; and another user's project is not found anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fireside.api.app import create_app
from fireside.api.served import ServedModel
from fireside.app import ChatApp
from fireside.engine import EngineConfig
from fireside.engine.types import EngineClient, RequestOutput, SamplingParams
from fireside.model.tokenizer import Tokenizer
from fireside.server import load_served
from tests.api_utils import run_app
from tests.app_utils import Backend, Client, EngineWrapper, chat_settings

pytestmark = pytest.mark.usefixtures("one_thread")


class RecordingEngine(EngineWrapper):
    """The real engine; every prompt it is given is kept, decoded, to see what the model
    was shown."""

    def __init__(self, engine: EngineClient, tokenizer: Tokenizer) -> None:
        self.engine, self.tokenizer = engine, tokenizer
        self.prompts: list[str] = []

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        self.prompts.append(self.tokenizer.decode(prompt_ids))
        return self.engine.generate(prompt_ids, params, request_id)


@pytest.fixture(scope="module")
def recording_server(
    api_model_dir: Path, chat_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RecordingEngine]]:
    engines: list[RecordingEngine] = []

    async def load() -> ServedModel:
        served = await load_served(api_model_dir, "tiny", "cpu", EngineConfig(max_num_seqs=4))
        engine = RecordingEngine(served.engine, served.tokenizer)
        engines.append(engine)
        served.engine = engine
        return served

    # SQLite: a database of this module's own; PostgreSQL: the session's, shared as usual.
    if chat_backend.name == "sqlite":
        backend = Backend("sqlite", tmp_path_factory.mktemp("projects"))
    else:
        backend = chat_backend
    app: FastAPI = create_app("tiny", load, extensions=[ChatApp(chat_settings(backend))])
    with run_app(app) as url:
        yield url, engines[0]


@pytest.fixture
def client(recording_server: tuple[str, RecordingEngine]) -> Iterator[Client]:
    c = Client(recording_server[0])
    yield c
    c.close()


def listed(client: Client, **params: str) -> list[str]:
    r = client.http.get("/conversations", params=params)
    assert r.status_code == 200, r.text
    return [c["id"] for c in r.json()["data"]]


def test_create_rename_list_and_move_chats_in_and_out(client: Client) -> None:
    client.signup("Pia")
    r = client.http.post("/projects", json={"name": "Thesis", "instructions": "Cite sources."})
    assert r.status_code == 201, r.text
    project = r.json()
    assert (project["name"], project["instructions"]) == ("Thesis", "Cite sources.")
    assert client.http.post("/projects", json={"name": ""}).status_code == 400
    assert client.http.post("/projects", json={"instructions": "x"}).status_code == 400
    other = client.http.post("/projects", json={"name": "Garden"}).json()
    assert other["instructions"] == ""

    r = client.http.patch(f"/projects/{project['id']}", json={"name": "Dissertation"})
    assert r.status_code == 200 and r.json()["name"] == "Dissertation"
    assert r.json()["instructions"] == "Cite sources."
    assert client.http.get(f"/projects/{project['id']}").json()["name"] == "Dissertation"
    page = client.http.get("/projects", params={"limit": 1}).json()
    assert [p["id"] for p in page["data"]] == [project["id"]]  # the one changed last
    rest = client.http.get("/projects", params={"cursor": page["next_cursor"]}).json()
    assert [p["id"] for p in rest["data"]] == [other["id"]] and rest["next_cursor"] is None

    inside = client.new_conversation(project_id=project["id"])
    assert inside["project_id"] == project["id"]
    loose = client.new_conversation()
    assert loose["project_id"] is None
    assert listed(client, project_id=project["id"]) == [inside["id"]]
    assert set(listed(client)) == {inside["id"], loose["id"]}  # all of them, as before

    r = client.http.patch(f"/conversations/{loose['id']}", json={"project_id": other["id"]})
    assert r.status_code == 200 and r.json()["project_id"] == other["id"]
    assert listed(client, project_id=other["id"]) == [loose["id"]]
    r = client.http.patch(f"/conversations/{loose['id']}", json={"project_id": None})
    assert r.status_code == 200 and r.json()["project_id"] is None
    assert listed(client, project_id=other["id"]) == []
    # A title change leaves the project as it was.
    client.http.patch(f"/conversations/{inside['id']}", json={"title": "Ch. 1"})
    assert client.http.get(f"/conversations/{inside['id']}").json()["project_id"] == project["id"]

    # One's export holds the projects, and each chat names its own.
    exported = client.http.get("/export").json()
    assert {(p["name"], p["instructions"]) for p in exported["projects"]} == {
        ("Dissertation", "Cite sources."),
        ("Garden", ""),
    }
    in_export = {c["id"]: c["project_id"] for c in exported["conversations"]}
    assert in_export == {inside["id"]: project["id"], loose["id"]: None}


def test_a_chat_in_a_project_answers_with_its_instructions(
    client: Client, recording_server: tuple[str, RecordingEngine]
) -> None:
    engine = recording_server[1]
    client.signup("Quin")
    project = client.http.post(
        "/projects", json={"name": "Pirates", "instructions": "Talk like a pirate."}
    ).json()
    conv = client.new_conversation(project_id=project["id"], system_prompt="Be brief.")
    engine.prompts.clear()
    assert client.send(conv["id"], "hello there")[-1].event == "done"
    prompt = engine.prompts[0]  # the first generation (the random model may call a tool)
    # The project's instructions, then the chat's own system prompt, before the question.
    assert prompt.index("Talk like a pirate.") < prompt.index("Be brief.")
    assert prompt.index("Be brief.") < prompt.index("hello there")

    # Edited instructions reach the next answer; out of the project, they are gone.
    client.http.patch(f"/projects/{project['id']}", json={"instructions": "Rhyme always."})
    engine.prompts.clear()
    client.send(conv["id"], "again")
    assert "Rhyme always." in engine.prompts[0]
    assert "Talk like a pirate." not in engine.prompts[0]
    client.http.patch(f"/conversations/{conv['id']}", json={"project_id": None})
    engine.prompts.clear()
    client.send(conv["id"], "and now")
    assert "Rhyme always." not in engine.prompts[0] and "Be brief." in engine.prompts[0]

    # Without a system prompt of its own, a chat gets the instructions alone.
    plain = client.new_conversation(project_id=project["id"])
    engine.prompts.clear()
    client.send(plain["id"], "hi")
    assert "Rhyme always." in engine.prompts[0]


def test_delete_a_project_moving_its_chats_out_or_with_them(client: Client) -> None:
    client.signup("Rex")
    kept = client.http.post("/projects", json={"name": "Keep chats"}).json()
    chat = client.new_conversation(project_id=kept["id"])
    client.send(chat["id"], "hello")
    r = client.http.delete(f"/projects/{kept['id']}")
    assert r.status_code == 204
    assert client.http.get(f"/projects/{kept['id']}").status_code == 404
    moved = client.http.get(f"/conversations/{chat['id']}").json()
    assert moved["project_id"] is None and len(moved["messages"]) == 2

    doomed = client.http.post("/projects", json={"name": "Drop chats"}).json()
    gone = [client.new_conversation(project_id=doomed["id"]) for _ in range(2)]
    client.send(gone[0]["id"], "bye")
    client.http.post(f"/conversations/{gone[0]['id']}/share")
    survivor = client.new_conversation()
    r = client.http.delete(f"/projects/{doomed['id']}", params={"delete_conversations": "true"})
    assert r.status_code == 204
    for c in gone:
        assert client.http.get(f"/conversations/{c['id']}").status_code == 404
    assert set(listed(client)) == {chat["id"], survivor["id"]}
    assert client.http.get("/shares").json()["data"] == []
    assert client.http.get("/projects").json()["data"] == []
    assert client.http.delete(f"/projects/{doomed['id']}").status_code == 404


def test_another_users_project_is_not_found(
    client: Client, recording_server: tuple[str, RecordingEngine]
) -> None:
    client.signup("Sal")
    project = client.http.post("/projects", json={"name": "Mine", "instructions": "x"}).json()
    p = project["id"]
    inside = client.new_conversation(project_id=p)

    intruder = Client(recording_server[0])
    intruder.signup("Ted")
    key = intruder.http.post("/keys", json={"name": "k"}).json()["key"]
    bearer = httpx.Client(
        base_url=recording_server[0] + "/api", headers={"Authorization": f"Bearer {key}"}
    )
    own = intruder.new_conversation()["id"]
    routes: list[tuple[str, str, dict[str, object] | None, dict[str, str]]] = [
        ("GET", f"/projects/{p}", None, {}),
        ("PATCH", f"/projects/{p}", {"name": "taken"}, {}),
        ("DELETE", f"/projects/{p}", None, {}),
        ("DELETE", f"/projects/{p}", None, {"delete_conversations": "true"}),
        ("GET", "/conversations", None, {"project_id": p}),
        ("POST", "/conversations", {"project_id": p}, {}),
        ("PATCH", f"/conversations/{own}", {"project_id": p}, {}),
    ]
    anonymous = httpx.Client(base_url=recording_server[0] + "/api")
    for who in (intruder.http, bearer):
        for method, path, body, params in routes:
            r = who.request(method, path, json=body, params=params)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["type"] == "not_found_error"
        assert who.get("/projects").json()["data"] == []
    for method, path, body, params in [*routes, ("GET", "/projects", None, {})]:
        r = anonymous.request(method, path, json=body, params=params)
        assert r.status_code == 401, (method, path, r.text)
    # Nothing of the owner's changed.
    assert client.http.get(f"/projects/{p}").json()["name"] == "Mine"
    assert client.http.get(f"/conversations/{inside['id']}").json()["project_id"] == p
    assert intruder.http.get(f"/conversations/{own}").json()["project_id"] is None
    for c in (intruder, bearer, anonymous):
        c.close()
