"""SFT and DPO loops on a tiny model: they learn, resume exactly, export HF dirs, refuse bad runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fireside.cli import main
from fireside.errors import RunConfigMismatchError, TrainingError
from fireside.model import Tokenizer, Transformer, load_pretrained, save_model, save_pretrained
from fireside.train.checkpoint import checkpoint_dirs
from fireside.train.dpo import train_dpo
from fireside.train.finetune import FinetuneOptions
from fireside.train.losses import sequence_logprobs
from fireside.train.metrics import read_metrics
from fireside.train.sft import train_sft
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


CHAT_ROWS = [chat(f"What is {a} + {b}?", f"{a + b}") for a in range(1, 5) for b in range(1, 4)]
CODE_ROWS = [
    chat("Write a function that doubles x.", "def double(x):\n    return 2 * x"),
    chat("Write a function that negates x.", "def negate(x):\n    return -x"),
]
PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Tell me about {topic}."}],
        "chosen": {"role": "assistant", "content": f"Here is a short note on {topic}."},
        "rejected": {"role": "assistant", "content": "No."},
    }
    for topic in ("rivers", "stars", "bread", "trains", "moss", "clocks")
]


@pytest.fixture
def base_model(tmp_path: Path, tokenizer: Tokenizer) -> Path:
    torch.manual_seed(0)
    model = Transformer(tiny_config(tokenizer.vocab_size))
    model.init_weights()
    path = tmp_path / "base"
    save_pretrained(model, tokenizer, path)
    return path


def sft_options(base: Path, data: list[str], out: Path, **kw: Any) -> FinetuneOptions:
    values: dict[str, Any] = dict(
        steps=30,
        batch_size=4,
        lr=3e-3,
        warmup=2,
        progress=False,
        device="cpu",
        save_every=10,
    )
    values.update(kw)
    return FinetuneOptions(model=base, data=data, output=out, **values)


def test_sft_learns_the_assistant_turns_and_exports_an_hf_dir(
    tmp_path: Path, base_model: Path
) -> None:
    chat_file = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    code_file = write_jsonl(tmp_path / "code.jsonl", CODE_ROWS)
    out = tmp_path / "sft"
    train_sft(sft_options(base_model, [f"{chat_file}:1", f"{code_file}:2"], out))
    losses = [r["loss"] for r in read_metrics(out)]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    tuned = load_pretrained(out)
    ids = tuned.tokenizer.render_chat(CODE_ROWS[0]["messages"]).ids
    base = load_pretrained(base_model)
    with torch.no_grad():
        before = base.model(torch.tensor([ids])).log_softmax(-1)
        after = tuned.model(torch.tensor([ids])).log_softmax(-1)
    answer = tuned.tokenizer.render_chat(CODE_ROWS[0]["messages"]).assistant_mask
    pos = [i - 1 for i in range(1, len(ids)) if answer[i]]
    gain = sum(after[0, p, ids[p + 1]] - before[0, p, ids[p + 1]] for p in pos)
    assert gain > 0  # the code answer became more likely
    assert [p.name for p in checkpoint_dirs(out)] == ["step-000020", "step-000030"]


def test_transformers_loads_the_sft_run_dir(tmp_path: Path, base_model: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers (dev extra) missing")
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    out = tmp_path / "sft"
    train_sft(sft_options(base_model, [str(data)], out, steps=2))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    ours = load_pretrained(out)
    ids = torch.tensor([ours.tokenizer.render_chat(CHAT_ROWS[0]["messages"]).ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours.model(ids), atol=1e-4, rtol=1e-4)


def test_sft_resumes_exactly_and_refuses_another_config(tmp_path: Path, base_model: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS + CODE_ROWS)
    straight = tmp_path / "straight"
    train_sft(sft_options(base_model, [str(data)], straight, steps=8, save_every=4))
    resumed = tmp_path / "resumed"
    train_sft(sft_options(base_model, [str(data)], resumed, steps=8, save_every=4))
    # Lose the last checkpoint and the export, as if killed between step 4 and step 8.
    shutil.rmtree(resumed / "checkpoints" / "step-000008")
    (resumed / "model.safetensors").unlink()
    train_sft(sft_options(base_model, [str(data)], resumed, steps=8, save_every=4))
    a, b = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6)
    with pytest.raises(RunConfigMismatchError, match="different configuration"):
        train_sft(sft_options(base_model, [str(data)], resumed, steps=8, save_every=4, lr=1e-3))


def test_sft_refuses_to_overwrite_its_starting_model(tmp_path: Path, base_model: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    with pytest.raises(TrainingError, match="starting model's directory"):
        train_sft(sft_options(base_model, [str(data)], base_model))


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_torchrun_two_processes_match_one(tmp_path: Path, base_model: Path, stage: str) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None, "torchrun ships with torch"
    rows = CHAT_ROWS + CODE_ROWS if stage == "sft" else PAIRS
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    args = ["train", stage, "--model", str(base_model), "--data", str(data), "--steps", "3"]
    args += ["--batch-size", "4", "--lr", "1e-3", "--no-progress", "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env["OMP_NUM_THREADS"] = "1"
    launch = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "fireside"]
    two = subprocess.run(
        [*launch, *args, "--output", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4)
    # Both exported the same model (up to float summation order).
    one, two_model = load_pretrained(tmp_path / "one"), load_pretrained(tmp_path / "two")
    for (name, p), q in zip(
        one.model.state_dict().items(), two_model.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


def test_dpo_raises_the_chosen_log_ratio(tmp_path: Path, base_model: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "dpo"
    opts = sft_options(base_model, [str(data)], out, steps=15, batch_size=3, lr=1e-3)
    train_dpo(opts, beta=0.5)
    rows = read_metrics(out)
    assert rows[0]["chosen_logratio"] == pytest.approx(0.0, abs=1e-4)  # policy == reference
    assert rows[-1]["chosen_logratio"] > 0.5
    assert rows[-1]["reward_margin"] > rows[0]["reward_margin"]
    assert rows[-1]["accuracy"] == 1.0
    # Independently of the log: the exported policy prefers the chosen answers more than the
    # reference does.
    from fireside.train.chat_data import load_dpo_file

    policy, reference = load_pretrained(out), load_pretrained(base_model)
    pair = load_dpo_file(data, policy.tokenizer, 256)[0]
    ids, mask = torch.tensor([pair.chosen_ids]), torch.tensor([pair.chosen_mask])
    with torch.no_grad():
        ratio = sequence_logprobs(policy.model, ids, mask) - sequence_logprobs(
            reference.model, ids, mask
        )
    assert ratio.item() > 0.5


def test_dpo_resumes_exactly(tmp_path: Path, base_model: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for out in (straight, resumed):
        train_dpo(sft_options(base_model, [str(data)], out, steps=6, save_every=3, lr=1e-3))
    shutil.rmtree(resumed / "checkpoints" / "step-000006")
    train_dpo(sft_options(base_model, [str(data)], resumed, steps=6, save_every=3, lr=1e-3))
    a, b = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in b] == list(range(1, 7))
    for key in ("loss", "chosen_reward", "rejected_reward"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-5, abs=1e-6)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`fireside ...` in this process (a subprocess per case would import torch each time)."""
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def test_cli_bad_inputs_are_clear_errors_and_leave_no_checkpoint(
    tmp_path: Path, base_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(CHAT_ROWS[0]) + "\n" + '{"messages": [oops]}\n')
    out = tmp_path / "run"
    for stage in ("sft", "dpo"):
        with pytest.raises(SystemExit) as exited:  # argparse: --output is required
            run_cli(capsys, "train", stage, "--model", str(base_model), "--data", str(bad))
        assert exited.value.code == 2
        code, err = run_cli(
            capsys,
            *("train", stage, "--model", str(base_model), "--data", str(bad)),
            *("--output", str(out), "--device", "cpu"),
        )
        assert code == 2
        assert f"{bad}:2: not valid JSON" in err or f"{bad}:1: missing 'prompt'" in err, err
        assert not (out / "checkpoints").exists()
    code, err = run_cli(
        capsys,
        *("train", "sft", "--model", str(tmp_path / "nope"), "--data", str(bad)),
        *("--output", str(out)),
    )
    assert code == 2 and "does not exist" in err

    # A model whose tokenizer disagrees with its embedding.
    mismatched = tmp_path / "mismatched"
    shutil.copytree(base_model, mismatched)
    save_model(Transformer(tiny_config(128)), mismatched)  # weights and config, not tokenizer
    good = write_jsonl(tmp_path / "good.jsonl", CHAT_ROWS)
    code, err = run_cli(
        capsys,
        "train",
        "sft",
        "--model",
        str(mismatched),
        "--data",
        str(good),
        "--output",
        str(out),
    )
    assert code == 2 and "do not belong together" in err

    # A foreign template whose render before an answer is not the start of the render with
    # it (it counts the messages first): the answer's tokens cannot be found.
    foreign = tmp_path / "foreign"
    shutil.copytree(base_model, foreign)
    (foreign / "chat_template.jinja").write_text(
        "{{ messages | length }}\n{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    )
    code, err = run_cli(
        capsys, "train", "sft", "--model", str(foreign), "--data", str(good), "--output", str(out)
    )
    assert code == 2 and f"{good}:1: messages[1] (assistant)" in err, err
    assert not (out / "checkpoints").exists()


def test_length_groups_keep_every_sequence_within_the_padded_budget() -> None:
    from fireside.train.chat_data import TokenizedChat
    from fireside.train.sft import length_groups

    lengths = [5, 300, 40, 41, 900, 7, 120, 2000]
    batch = [TokenizedChat([1] * n, [1] * n, str(i)) for i, n in enumerate(lengths)]
    groups = length_groups(batch, 1000)
    assert sorted(c.where for g in groups for c in g) == sorted(c.where for c in batch)
    for group in groups:
        assert len(group) == 1 or len(group) * max(len(c.ids) for c in group) <= 1000
    assert [len(c.ids) for g in groups for c in g] == sorted(lengths)  # shortest first


def test_sft_micro_batches_train_as_one_padded_batch(
    tmp_path: Path, base_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cutting a step into length groups changes the padding, not the gradient: the losses
    match a run that pads the whole step at once."""
    from fireside.train import sft

    rows = [*CHAT_ROWS, chat("Say a long thing.", "word " * 60)]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    whole = tmp_path / "whole"
    train_sft(sft_options(base_model, [str(data)], whole, steps=4, batch_size=6))
    monkeypatch.setattr(sft, "MICRO_BATCH_TOKENS", 40)  # every step in several groups
    split = tmp_path / "split"
    train_sft(sft_options(base_model, [str(data)], split, steps=4, batch_size=6))
    for a, b in zip(read_metrics(whole), read_metrics(split), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
