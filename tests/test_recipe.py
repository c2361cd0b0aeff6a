"""`fireside train recipe`: every stage, end to end, on a tiny corpus and a tiny model."""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from fireside.model import load_pretrained
from fireside.model.pretrained import uses_tools
from fireside.tools.extract import python_source_entries
from fireside.tools.knowledge import build_index
from fireside.train import recipe
from fireside.train.recipe import Recipe, run_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_gpu  # a script (scripts/), not a module of the package

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A work directory holding a tiny corpus, and an index; the recipe "tiny" registered."""
    work = tmp_path / "work"
    corpus = work / "corpus"
    corpus.mkdir(parents=True)
    # A corpus as `fireside data sources` writes it (that stage reads this machine: skipped here).
    # Long documents: the validation split (one in 200) must hold a row of seq_len tokens.
    prose = [
        " ".join(f"The tool{i} command lists {i * j} entries of kind {j}." for j in range(30))
        for i in range(150)
    ]
    code = [
        "".join(f"def f{i}_{j}(x):\n    return x + {i * j}\n" for j in range(30))
        for i in range(150)
    ]
    for name, texts in (("man-pages", prose), ("python-stdlib", code)):
        (corpus / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in texts)
        )
    (corpus / "sources.json").write_text("{}")
    source = "".join(f'def part{i}(x):\n    """Return part {i} of x."""\n' for i in range(60))
    db = tmp_path / "k.db"
    build_index(db, {"python": python_source_entries("widgets", source, "widgets.py")})
    tiny = Recipe(
        depth=1,
        vocab_size=400,
        shares={"man-pages": 150_000, "python-stdlib": 100_000},
        pretrain_steps=2,
        pretrain_batch_tokens=1024,
        seq_len=256,
        device_batch=4,
        sft_steps=2,
        sft_batch=2,
        sft_lr=1e-3,
        device="cpu",
        sft_counts={
            "calculator": 6,
            "lookup": 6,
            "unknown": 2,
            "python": 1,
            "identity": 1,
            "small_talk_passes": 1,
        },
    )
    monkeypatch.setitem(recipe.RECIPES, "tiny", tiny)
    return work, db


def test_the_recipe_runs_every_stage_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, db = tiny_recipe(tmp_path, monkeypatch)
    out = run_recipe("tiny", work, tmp_path / "model", knowledge_db=db)

    bundle = load_pretrained(out)
    assert bundle.model.config.num_hidden_layers == 1
    assert uses_tools(
        bundle.generation_config
    )  # marked, so `fireside chat` and the app turn the tools on
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert "Tools:" in (out / "chat_template.jinja").read_text()
    assert (work / "mix" / "held-out-prose.txt").is_file()
    # The held-out slices without what training shares, the training side as the mix wrote it.
    dedup = json.loads((work / "mix" / "dedup.json").read_text())
    assert [f["characters_shared_after"] for f in dedup["files"]] == [0, 0]
    assert (work / "mix" / "held-out-prose.dedup.txt").is_file()
    assert "| arithmetic (tool eval) | 100 |" in (work / "overlap.md").read_text()
    # The base model is kept beside the chat model, and plain text from the mix trained with it.
    assert load_pretrained(work / "base").model.config.num_hidden_layers == 1
    text = [json.loads(line) for line in (work / "sft-text.jsonl").read_text().splitlines()]
    assert text and all(set(t) == {"text"} for t in text)
    tiny = recipe.RECIPES["tiny"]
    data = recipe.sft_options(tiny, work, work / "pretrain", work / "sft", steps=1).data
    assert data == [str(work / "sft.jsonl"), f"{work / 'sft-text.jsonl'}:{tiny.sft_text_weight}"]
    # Run again: every finished stage is skipped, and the model is written again the same.
    sft_lines = (work / "sft.jsonl").read_text()
    run_recipe("tiny", work, tmp_path / "model", knowledge_db=db)
    assert (work / "sft.jsonl").read_text() == sft_lines


def test_data_only_work_trains_on_another_machine_within_a_time_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--data-only` leaves what training reads; scripts/train_gpu.py (here on the CPU) probes
    the step time, trains the steps that fit, and delivers the chat model as split pieces that
    put back together load as a model marked for tools, the base model's pieces gone."""
    work, db = tiny_recipe(tmp_path, monkeypatch)
    assert run_recipe("tiny", work, tmp_path / "unused", knowledge_db=db, data_only=True) == work
    assert not (work / "pretrain").exists() and (work / "sft.jsonl").is_file()
    # The GPU machine gets no corpus, mix or index: only what training reads.
    for gone in ("corpus", "mix"):
        shutil.rmtree(work / gone)
    out = tmp_path / "out"
    argv = ["train_gpu.py", "--recipe", "tiny", "--work", str(work), "--out", str(out),
            "--pretrain-seconds", "1", "--sft-seconds", "1", "--pack", "1", "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    assert train_gpu.main() == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["pretrain_steps"] >= 1 and summary["sft_steps"] >= 1
    pieces = sorted(out.glob("model.tar.*"))
    assert pieces and all(p.stat().st_size <= 2**20 for p in pieces)
    assert not list(out.glob("base.tar.*")) and not (out / "model").exists()
    archive = tmp_path / "model.tar"
    archive.write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    bundle = load_pretrained(tmp_path / "unpacked" / "model")
    assert uses_tools(bundle.generation_config)
    metrics = [
        json.loads(line) for line in (out / "pretrain-metrics.jsonl").read_text().splitlines()
    ]
    assert sum("step_s" in m for m in metrics) == summary["pretrain_steps"]


def test_step_time_probe_ignores_the_warm_up_steps(tmp_path: Path) -> None:
    steps = [{"step": i, "step_s": 5.0 if i <= 3 else 0.25} for i in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    assert train_gpu.median_step_seconds(tmp_path) == 0.25
    assert train_gpu.steps_within(10, tmp_path, most=1000) == 40
    assert train_gpu.steps_within(10, tmp_path, most=7) == 7


def test_a_packed_model_splits_into_pieces_that_join_back(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    weights = bytes(range(256)) * (10 * 2**10 + 7)  # 2.5 MiB and a bit
    (model / "model.safetensors").write_bytes(weights)
    out = tmp_path / "out"
    out.mkdir()
    train_gpu.pack(model, out, piece_mib=1)
    pieces = sorted(out.glob("model.tar.*"))
    assert [p.name for p in pieces] == ["model.tar.00", "model.tar.01", "model.tar.02"]
    assert all(p.stat().st_size <= 2**20 for p in pieces) and not (out / "model.tar").exists()
    (tmp_path / "joined.tar").write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(tmp_path / "joined.tar") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    assert (tmp_path / "back" / "model" / "model.safetensors").read_bytes() == weights
