"""Shared fixtures: a tiny tokenizer trained on the standard library, tiny random models."""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fireside.model import ModelConfig, Tokenizer, Transformer, save_pretrained, train_tokenizer
from tests.gguf_utils import converter, ggml_kernels, gguf_file, model_dirs  # noqa: F401 - fixtures


def stdlib_texts(limit: int = 40) -> list[str]:
    """Real text to train on: modules of the Python standard library (always installed)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((root / "json").glob("*.py")) + sorted((root / "email").glob("*.py"))
    return [f.read_text(encoding="utf-8") for f in files[:limit]]


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return train_tokenizer(stdlib_texts(), vocab_size=512)


def tiny_config(vocab_size: int, **overrides: object) -> ModelConfig:
    values: dict[str, object] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        architecture="LlamaForCausalLM",
    )
    values.update(overrides)
    return ModelConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
    """A Fireside-made tiny Llama with Fireside's tokenizer and chat template."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(tokenizer.vocab_size))
    model.init_weights(std=0.5)  # a large std so greedy choices are far from ties
    path = tmp_path_factory.mktemp("tiny-llama")
    save_pretrained(model, tokenizer, path)
    return path


def read_json(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text()))


@pytest.fixture(scope="session")
def api_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
    """Like tiny_model_dir with a 1024-token context: room for tool schemas in chat prompts."""
    from tests.api_utils import make_model_dir

    return make_model_dir(tokenizer, tmp_path_factory.mktemp("api-llama"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads of
    # parallel test workers oversubscribe the cores and slow every step many times over.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def fireside_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Servers the tests start keep their database and secret here, never in the home
    directory of whoever runs the tests."""
    import os

    path = tmp_path_factory.mktemp("fireside-data")
    before = os.environ.get("FIRESIDE_DATA_DIR")
    os.environ["FIRESIDE_DATA_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("FIRESIDE_DATA_DIR", None)
    else:
        os.environ["FIRESIDE_DATA_DIR"] = before


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def chat_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """The chat app's two set-ups: SQLite with the in-process event log, and PostgreSQL (a
    fresh database for this test session, so parallel workers never share one) with Redis."""
    from tests.app_utils import Backend, postgres_database

    data_dir = tmp_path_factory.mktemp(f"chat-{request.param}")
    if request.param == "sqlite":
        yield Backend("sqlite", data_dir)
        return
    with postgres_database() as url:
        yield Backend("postgres", data_dir, url, _redis_url())


def _redis_url() -> str:
    from tests.app_utils import REDIS_URL, redis_available

    if not redis_available():
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture(scope="session")
def chat_server(chat_backend: object, api_model_dir: Path) -> Iterator[str]:
    """One running chat server per backend for the whole session (tests sign up their own
    users, so they share it without seeing each other's data)."""
    from tests.app_utils import Backend, chat_settings, make_admin, run_chat_server

    assert isinstance(chat_backend, Backend)
    with run_chat_server(api_model_dir, chat_settings(chat_backend)) as url:
        # The first account would be admin: made here, so every test's sign-up is a user.
        make_admin(chat_backend)
        yield url
