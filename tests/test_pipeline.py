"""The whole recipe on a tiny corpus, through the command line: raw files -> a model that answers.

tokenizer -> data prepare -> pretrain (loss falls) -> SIGKILL mid-run -> resume (steps carry
on) -> SFT (assistant-only mask) -> DPO (chosen log-ratio rises) -> eval (report card) -> the
final RUN_DIR loads and answers a chat turn. The last step serves the final RUN_DIR with
`fireside serve`'s app and asks it through the official openai client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from fireside.cli import main
from fireside.eval.generate import greedy_generate
from fireside.model import load_pretrained
from fireside.train.chat_data import LengthReport, load_sft_file
from fireside.train.metrics import read_metrics
from tests.api_utils import run_server

PRETRAIN_STEPS = 20


pytestmark = pytest.mark.usefixtures("one_thread")


def small_stdlib_files(n: int) -> list[Path]:
    """The n smallest non-trivial modules of the standard library: real code, quick to train on."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [f for f in root.glob("*.py") if 2_000 < f.stat().st_size < 40_000]
    return sorted(files, key=lambda f: (f.stat().st_size, f.name))[:n]


def conversation(q: str, a: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": q},
            {"role": "assistant", "content": a},
        ]
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(*args: str) -> None:
    assert main(list(args)) == 0


def test_raw_files_to_an_answering_model(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in small_stdlib_files(60):
        (corpus / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    tok, data, base = tmp_path / "tok", tmp_path / "data", tmp_path / "base"

    cli("train", "tokenizer", "--input", str(corpus), "--vocab-size", "512", "--output", str(tok))
    cli(
        *("data", "prepare", "--input", str(corpus), "--tokenizer", str(tok)),
        *("--output", str(data), "--val-fraction", "0.1", "--no-progress"),
    )

    # Pretrain in a subprocess, SIGKILL it after its first checkpoint, then run it again.
    pretrain = [sys.executable, "-m", "fireside.cli", "train", "pretrain", "--data", str(data)]
    pretrain += ["--tokenizer", str(tok), "--depth", "1", "--output", str(base)]
    pretrain += ["--steps", str(PRETRAIN_STEPS), "--seq-len", "512", "--eval-every", "10"]
    pretrain += ["--eval-tokens", "2048", "--sample-every", "0", "--save-every", "10"]
    pretrain += ["--no-progress", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env["OMP_NUM_THREADS"] = "1"  # as the in-process stages below (see one_thread)
    proc = subprocess.Popen(pretrain, env=env, stderr=subprocess.PIPE, text=True)
    first_checkpoint = base / "checkpoints" / "step-000010"
    deadline = time.monotonic() + 300
    while not first_checkpoint.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "pretraining finished before it could be killed"
    killed_at = max(r["step"] for r in read_metrics(base))
    assert 10 <= killed_at < PRETRAIN_STEPS
    resumed = subprocess.run(pretrain, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    losses = [r["loss"] for r in read_metrics(base) if "loss" in r]
    assert [r["step"] for r in read_metrics(base) if "loss" in r] == list(
        range(1, PRETRAIN_STEPS + 1)
    )
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5  # it learned

    # SFT: chat and code files mixed 2:1; loss on the assistant's tokens only.
    questions = [(f"What is {a} + {b}?", str(a + b)) for a in range(1, 7) for b in range(1, 5)]
    chat = write_jsonl(tmp_path / "chat.jsonl", [conversation(q, a) for q, a in questions])
    code = write_jsonl(
        tmp_path / "code.jsonl",
        [
            conversation(
                "Write a Python function that adds a and b.", "def add(a, b):\n    return a + b"
            ),
            conversation(
                "Write a Python function that squares x.", "def square(x):\n    return x * x"
            ),
        ],
    )
    bundle = load_pretrained(base)
    [first] = load_sft_file(code, bundle.tokenizer, 256, LengthReport())[:1]
    trained = [t for i, t in enumerate(first.ids) if i > 0 and first.mask[i]]
    assert bundle.tokenizer.decode(trained) == "def add(a, b):\n    return a + b<|end|>"
    sft = tmp_path / "sft"
    cli(
        *("train", "sft", "--model", str(base), "--data", f"{chat}:2", "--data", str(code)),
        *("--output", str(sft), "--steps", "25", "--batch-size", "8", "--lr", "3e-3"),
        *("--no-progress", "--device", "cpu", "--save-every", "10"),
    )
    sft_losses = [r["loss"] for r in read_metrics(sft)]
    assert len(sft_losses) == 25 and sum(sft_losses[-5:]) < sum(sft_losses[:5])

    # DPO on preference pairs in the feedback-export format: people preferred a full sentence
    # to the bare number SFT taught.
    pairs = [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": {"role": "assistant", "content": f"The answer is {a}."},
            "rejected": {"role": "assistant", "content": a},
        }
        for q, a in questions[:8]
    ]
    dpo = tmp_path / "dpo"
    cli(
        *(
            "train",
            "dpo",
            "--model",
            str(sft),
            "--data",
            str(write_jsonl(tmp_path / "p.jsonl", pairs)),
        ),
        *("--output", str(dpo), "--steps", "10", "--batch-size", "4", "--lr", "3e-4"),
        *("--beta", "0.5", "--no-progress", "--device", "cpu"),
    )
    dpo_rows = read_metrics(dpo)
    assert dpo_rows[0]["chosen_logratio"] == pytest.approx(0.0, abs=1e-4)
    assert dpo_rows[-1]["chosen_logratio"] > dpo_rows[0]["chosen_logratio"] + 1.0
    assert dpo_rows[-1]["reward_margin"] > 0

    # Evaluation and the report card, in the final run directory.
    cli(
        *("eval", "--model", str(dpo), "--data", str(data), "--humaneval-limit", "2"),
        *("--humaneval-timeout", "5", "--device", "cpu"),
    )
    report = (dpo / "report.md").read_text()
    assert "| validation bits per byte |" in report and "| HumanEval pass@1 |" in report
    assert "![loss curve](loss_curve.png)" in report
    assert f"| stage | dpo, started from `{sft.resolve()}` |" in report
    results = json.loads((dpo / "eval.json").read_text())
    assert 0 < results["bpb"]["bits_per_byte"] < 8
    # Every held-out byte and every token but each document's BOS was scored.
    val = json.loads((data / "manifest.json").read_text())["splits"]["val"]
    assert results["bpb"]["bytes"] == val["bytes"]
    assert results["bpb"]["tokens"] == val["tokens"] - val["documents"]
    # The prompts fit the 512-token context, so both programs really ran in the sandbox.
    assert {p["status"] for p in results["humaneval"]["problems"]} <= {
        "passed",
        "failed",
        "timeout",
    }

    # Served and answering: `fireside serve` on the final RUN_DIR, asked through the official
    # openai client, answers greedily exactly what the model itself says.
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    final = load_pretrained(dpo)
    prompt = final.tokenizer.render_chat(messages, add_generation_prompt=True)
    expected = greedy_generate(
        final.model, final.tokenizer, prompt.ids, 20, stop_token_ids=final.stop_token_ids
    )
    assert expected.strip() and len(final.tokenizer.encode(expected)) < 20, expected
    with run_server(dpo, name="mine") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="mine",
            messages=messages,
            temperature=0,
            max_tokens=20,
        )
    assert reply.choices[0].finish_reason == "stop"  # it ended its turn by itself
    assert reply.choices[0].message.content == expected
