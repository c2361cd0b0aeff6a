"""Finding 5: the prefix cache is no cross-user prompt oracle.

Before the fix the cache was shared by everyone and /metrics was public: an anonymous caller
learned whether a guess of another user's system prompt was right from the cached prompt
tokens. Now block hashes are salted per caller (the engine's `cache_salt`, vLLM's), and
/metrics takes the server's key or an administrator's whenever /v1 needs a key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fireside.engine import Engine, EngineConfig, SamplingParams
from tests.app_utils import Backend, Client, chat_settings, make_admin, run_chat_server
from tests.engine_utils import collect, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

SYSTEM = list(range(50, 75))  # 25 tokens: six full blocks of 4
SECRET = "You are the vault. The PIN is 4821; never say it. " * 6


def test_different_salts_share_no_blocks_and_one_salt_still_does() -> None:
    engine = Engine(tiny_model(300), None, EngineConfig(block_size=4))

    async def cached(prompt: list[int], salt: str | None, rid: str) -> int:
        params = SamplingParams(temperature=0, max_tokens=3, cache_salt=salt)
        got = await collect(engine, prompt, params, rid)
        return got.outputs[0].num_cached_prompt_tokens

    async def main() -> None:
        async with engine:
            assert await cached([*SYSTEM, 1], "alice", "a1") == 0
            assert await cached([*SYSTEM, 2], "bob", "b1") == 0  # the right guess: no hit
            assert await cached([*SYSTEM, 3], None, "n1") == 0  # nor unsalted
            assert await cached([*SYSTEM, 4], "alice", "a2") == 24  # alice's own: a hit
            assert await cached([*SYSTEM, 5], "bob", "b2") == 24
            hits = engine.stats().prefix_cache_hits
            assert hits == 48

    asyncio.run(main())


def counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"fireside:{name}_total"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


@pytest.fixture
def people(chat_server: str, chat_backend: Backend) -> Iterator[dict[str, Client]]:
    admin = Client(chat_server)
    assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    alice, bob = Client(chat_server), Client(chat_server)
    alice.signup("Alice")
    bob.signup("Bob")
    clients = {"admin": admin, "alice": alice, "bob": bob}
    yield clients
    for c in clients.values():
        c.close()


def key_of(client: Client) -> dict[str, str]:
    key = client.http.post("/keys", json={"name": "k"}).json()["key"]
    return {"Authorization": f"Bearer {key}"}


def test_v1_callers_and_chat_users_do_not_hit_each_others_cache(
    chat_server: str, people: dict[str, Client]
) -> None:
    keys = {name: key_of(c) for name, c in people.items()}

    def cached_tokens(who: str, guess: str, **more: str) -> int:
        body = {
            "model": "tiny",
            "messages": [{"role": "system", "content": guess}, {"role": "user", "content": "hi"}],
            "max_tokens": 1,
            **more,
        }
        r = httpx.post(f"{chat_server}/v1/chat/completions", json=body, headers=keys[who])
        assert r.status_code == 200, r.text
        return int(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"])

    def hits() -> float:
        text = httpx.get(f"{chat_server}/metrics", headers=keys["admin"]).text
        return counter(text, "prefix_cache_hits")

    # The chat app salts by user: bob's conversation finds none of alice's cached prompt.
    for who in ("alice", "bob"):
        conversation = people[who].new_conversation()
        before = hits()
        events = people[who].send(conversation["id"], SECRET)
        assert events[-1].event == "done"
        assert hits() - before == 0, who

    assert cached_tokens("alice", SECRET) == 0
    assert cached_tokens("alice", SECRET) > 16  # alice's repeat hits her own cache
    assert cached_tokens("bob", SECRET) == 0  # bob's right guess tells him nothing
    assert cached_tokens("bob", SECRET) > 16
    # A salt of one's own (vLLM's field) splits one's cache further, never joins another's.
    assert cached_tokens("alice", SECRET, cache_salt="other") == 0
    assert cached_tokens("bob", SECRET, cache_salt="") > 16  # "" is no salt at all


def test_metrics_need_an_admin_or_the_server_key(
    chat_server: str, people: dict[str, Client]
) -> None:
    assert httpx.get(f"{chat_server}/metrics").status_code == 401
    bob = key_of(people["bob"])
    assert httpx.get(f"{chat_server}/metrics", headers=bob).status_code == 403
    admin = key_of(people["admin"])
    r = httpx.get(f"{chat_server}/metrics", headers=admin)
    assert r.status_code == 200
    assert "fireside:prefix_cache_hits_total" in r.text
    # Requests by route template, the chat app's prefix included (the keys made above).
    assert 'method="POST",route="/api/keys",status="201"' in r.text
    for probe in ("/health", "/livez", "/readyz"):  # probes stay open
        assert httpx.get(f"{chat_server}{probe}").status_code == 200


def test_on_an_open_server_anonymous_callers_miss_a_users_cache(
    tmp_path: Path, api_model_dir: Path
) -> None:
    settings = chat_settings(Backend("sqlite", tmp_path), auth="optional")
    with run_chat_server(api_model_dir, settings) as url:
        alice = Client(url)
        alice.signup("Alice")
        events = alice.send(alice.new_conversation()["id"], SECRET)
        assert events[-1].event == "done"

        def cached_tokens(headers: dict[str, str]) -> int:
            body = {"model": "tiny", "messages": [{"role": "user", "content": SECRET}]}
            r = httpx.post(
                f"{url}/v1/chat/completions", json={**body, "max_tokens": 1}, headers=headers
            )
            assert r.status_code == 200, r.text
            return int(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"])

        assert cached_tokens({}) == 0  # anonymous: the very prompt alice's chat cached
        assert cached_tokens({"Authorization": "Bearer sk-anything"}) > 16  # anonymous's own
        # Alice's personal key is alice, in the chat app and on /v1 alike.
        assert cached_tokens(key_of(alice)) > 16
        alice.close()
