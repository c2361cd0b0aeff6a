"""Training checkpoints: exact round trip, atomic writes, pruning, config mismatch; optimizers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from fireside.errors import RunConfigMismatchError, TrainingError
from fireside.model import Tokenizer, Transformer, load_pretrained
from fireside.train.checkpoint import (
    checkpoint_dirs,
    export_hf,
    load_latest_checkpoint,
    save_checkpoint,
)
from fireside.train.loop import lm_loss
from fireside.train.optim import build_optimizers, lr_schedule, set_lr_multiplier
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(vocab: int, seed: int = 0, **overrides: object) -> tuple[Transformer, list]:
    torch.manual_seed(seed)
    model = Transformer(tiny_config(vocab, **overrides))
    model.init_weights()
    return model, build_optimizers(model, lr=3e-3, weight_decay=0.1)


def _train_step(model: Transformer, optimizers: list, vocab: int) -> float:
    # Draws from the global RNG, so a restored RNG state shows in the result.
    x = torch.randint(0, vocab, (2, 17))
    loss = lm_loss(model(x[:, :-1]), x[:, 1:])
    loss.backward()
    for opt in optimizers:
        opt.step()
        opt.zero_grad()
    return loss.item()


def test_build_optimizers_puts_hidden_matrices_on_muon() -> None:
    model, optimizers = _setup(128)
    muon, adamw = optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    q = model.model.layers[0].self_attn.q_proj.weight
    assert id(q) in muon_ids
    assert id(model.model.embed_tokens.weight) not in muon_ids
    assert id(model.lm_head.weight) not in muon_ids
    every = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    assert every == {id(p) for p in model.parameters()}
    set_lr_multiplier(optimizers, 0.5)
    assert muon.param_groups[0]["lr"] == pytest.approx(1.5e-3)


def test_lr_schedule_warms_up_holds_and_decays() -> None:
    values = [lr_schedule(s, 100, 10, cooldown_frac=0.5) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10:50] == [1.0] * 40
    assert all(a > b for a, b in itertools.pairwise(values[50:]))
    assert values[-1] < 0.05
    with pytest.raises(ValueError):
        lr_schedule(0, 0, 0)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    vocab = 128
    model, optimizers = _setup(vocab)
    for _ in range(3):
        _train_step(model, optimizers, vocab)
    save_checkpoint(
        tmp_path, model=model, optimizers=optimizers, step=3, state={"pos": 7}, keep_last=2
    )
    expected = [_train_step(model, optimizers, vocab) for _ in range(3)]

    fresh, fresh_opts = _setup(vocab, seed=123)  # different weights and RNG until restored
    state = load_latest_checkpoint(tmp_path, model=fresh, optimizers=fresh_opts)
    assert state == {"pos": 7, "step": 3}
    resumed = [_train_step(fresh, fresh_opts, vocab) for _ in range(3)]
    assert resumed == expected  # bit-for-bit on CPU


def test_pruning_and_leftover_temporaries(tmp_path: Path) -> None:
    model, optimizers = _setup(128)
    for step in (1, 2, 3, 4):
        save_checkpoint(
            tmp_path, model=model, optimizers=optimizers, step=step, state={}, keep_last=2
        )
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-000003", "step-000004"]
    # A save killed mid-way leaves a temporary, never a step-* directory; loading clears it.
    partial = tmp_path / "checkpoints" / ".tmp-step-000005"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    state = load_latest_checkpoint(tmp_path, model=model, optimizers=optimizers)
    assert state is not None and state["step"] == 4
    assert not partial.exists()


def test_no_checkpoint_returns_none(tmp_path: Path) -> None:
    model, optimizers = _setup(128)
    assert load_latest_checkpoint(tmp_path, model=model, optimizers=optimizers) is None


def test_different_config_is_refused(tmp_path: Path) -> None:
    model, optimizers = _setup(128)
    save_checkpoint(tmp_path, model=model, optimizers=optimizers, step=1, state={}, keep_last=1)
    other, other_opts = _setup(128, hidden_size=96, intermediate_size=192)
    with pytest.raises(RunConfigMismatchError, match=r"model\.hidden_size: run has 64, now 96"):
        load_latest_checkpoint(tmp_path, model=other, optimizers=other_opts)
    with pytest.raises(RunConfigMismatchError, match=r"lr: run has None, now 1\.0"):
        load_latest_checkpoint(
            tmp_path, model=model, optimizers=optimizers, fingerprint={"lr": 1.0}
        )


def test_different_world_size_is_refused(tmp_path: Path) -> None:
    model, optimizers = _setup(128)
    save_checkpoint(tmp_path, model=model, optimizers=optimizers, step=1, state={}, keep_last=1)
    meta_path = tmp_path / "checkpoints" / "step-000001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["world_size"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(TrainingError, match="2 process"):
        load_latest_checkpoint(tmp_path, model=model, optimizers=optimizers)


def test_tied_embeddings_round_trip(tmp_path: Path) -> None:
    model, optimizers = _setup(128, tie_word_embeddings=True)
    save_checkpoint(tmp_path, model=model, optimizers=optimizers, step=1, state={}, keep_last=1)
    fresh, fresh_opts = _setup(128, seed=5, tie_word_embeddings=True)
    load_latest_checkpoint(tmp_path, model=fresh, optimizers=fresh_opts)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight


def test_export_hf_loads(tmp_path: Path, tokenizer: Tokenizer) -> None:
    model, _ = _setup(tokenizer.vocab_size)
    export_hf(tmp_path, model, tokenizer)
    bundle = load_pretrained(tmp_path)
    x = torch.tensor([tokenizer.encode("def f(x): return x")])
    with torch.no_grad():
        assert torch.allclose(bundle.model(x), model.eval()(x), atol=1e-5)
