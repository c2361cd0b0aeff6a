"""LoRA adapters over the OpenAI API, with the official client: `fireside serve --lora
NAME=DIR` serves each adapter as a model of its own beside the base (listed in /v1/models, its
name in every response), and an administrator loads and unloads more at run time through
vLLM's routes, which nobody else may call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from fireside.model import load_pretrained
from fireside.settings import Settings
from tests.api_utils import RunningServer, run_app
from tests.lora_utils import write_adapter

KEY = "server-key"
PROMPT = "def handler(request):"


@pytest.fixture(scope="module")
def adapters(api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    model = load_pretrained(api_model_dir, "cpu").model
    root = tmp_path_factory.mktemp("adapters")
    return {
        "bees": write_adapter(root / "bees", model, seed=1, std=0.5),
        "wasps": write_adapter(root / "wasps", model, targets=("q", "v"), seed=2, std=0.5),
    }


@pytest.fixture(scope="module")
def server(api_model_dir: Path, adapters: dict[str, Path]) -> Iterator[RunningServer]:
    from fireside.server import build_app

    settings = Settings(
        model=str(api_model_dir),
        served_model_name="tiny",
        api_key=KEY,
        app=False,
        lora=[f"bees={adapters['bees']}"],
    )
    with run_app(build_app(settings)) as url:
        yield RunningServer(url, "tiny", KEY)


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)


def complete(client: openai.OpenAI, model: str) -> tuple[str, str]:
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
    return r.model, r.choices[0].text


def test_an_adapter_is_a_model_of_its_own(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny", "bees"]
    assert (models[1].model_extra or {})["parent"] == "tiny"
    assert client.models.retrieve("bees").id == "bees"

    base_name, base_text = complete(client, "tiny")
    name, text = complete(client, "bees")
    assert (base_name, name) == ("tiny", "bees")
    assert text != base_text  # the adapter changes what the model writes
    assert complete(client, "bees") == (name, text)  # and greedily, the same again
    chat = client.chat.completions.create(
        model="bees", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert chat.model == "bees"

    with pytest.raises(openai.NotFoundError, match="'tiny', 'bees'"):
        complete(client, "hornets")


def test_only_an_administrator_loads_and_unloads(
    server: RunningServer, client: openai.OpenAI, adapters: dict[str, Path]
) -> None:
    body = {"lora_name": "wasps", "lora_path": str(adapters["wasps"])}
    load = f"{server.url}/v1/load_lora_adapter"
    unload = f"{server.url}/v1/unload_lora_adapter"
    assert httpx.post(load, json=body).status_code == 401
    bad_key = {"Authorization": "Bearer nope"}
    assert httpx.post(load, json=body, headers=bad_key).status_code == 401
    admin = {"Authorization": f"Bearer {KEY}"}

    r = httpx.post(load, json=body, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "wasps" and r.json()["parent"] == "tiny"
    assert [m.id for m in client.models.list().data] == ["tiny", "bees", "wasps"]
    assert complete(client, "wasps")[0] == "wasps"

    refused = {
        "no adapter_config.json": {"lora_name": "x", "lora_path": str(adapters["wasps"].parent)},
        "base model's name": {"lora_name": "tiny", "lora_path": str(adapters["wasps"])},
        "adapter name": {"lora_name": "../x", "lora_path": str(adapters["wasps"])},
    }
    for reason, bad in refused.items():
        r = httpx.post(load, json=bad, headers=admin)
        assert r.status_code == 400 and reason in r.json()["error"]["message"], r.text

    assert httpx.post(unload, json={"lora_name": "wasps"}).status_code == 401
    r = httpx.post(unload, json={"lora_name": "wasps"}, headers=admin)
    assert r.status_code == 200, r.text
    assert httpx.post(unload, json={"lora_name": "wasps"}, headers=admin).status_code == 404
    assert [m.id for m in client.models.list().data] == ["tiny", "bees"]
    with pytest.raises(openai.NotFoundError):
        complete(client, "wasps")
