"""`fireside train recipe`: every stage, end to end, on a tiny corpus and a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fireside.model import load_pretrained
from fireside.model.pretrained import uses_tools
from fireside.tools.extract import python_source_entries
from fireside.tools.knowledge import build_index
from fireside.train import recipe
from fireside.train.recipe import Recipe, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_recipe_runs_every_stage_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    # Run again: every finished stage is skipped, and the model is written again the same.
    sft_lines = (work / "sft.jsonl").read_text()
    run_recipe("tiny", work, tmp_path / "model", knowledge_db=db)
    assert (work / "sft.jsonl").read_text() == sft_lines
