"""`fireside chat`: a real process, fed on stdin, streaming the model's greedy replies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from fireside.model import load_pretrained


def greedy_reply(model_dir: Path, messages: list[dict[str, Any]], max_tokens: int) -> str:
    """The reply computed with plain forward passes, stopping at the model's end-of-turn token."""
    bundle = load_pretrained(model_dir)
    ids = bundle.tokenizer.render_chat(messages, add_generation_prompt=True).ids
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            nxt = int(bundle.model(torch.tensor([ids + out]))[0, -1].argmax())
            if nxt in bundle.stop_token_ids:
                break
            out.append(nxt)
    return bundle.tokenizer.decode(out, skip_special_tokens=True)


def test_chat_streams_replies_with_the_chat_template(tiny_model_dir: Path) -> None:
    system = "You are terse."
    cmd = [sys.executable, "-m", "fireside.cli", "chat", "--model", str(tiny_model_dir)]
    cmd += ["--system", system, "--temperature", "0", "--max-tokens", "10", "--device", "cpu"]
    proc = subprocess.run(
        cmd,
        input="hello there\n/reset\nwhat is json?\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    first = greedy_reply(
        tiny_model_dir,
        [{"role": "system", "content": system}, {"role": "user", "content": "hello there"}],
        10,
    )
    # After /reset the second question starts a fresh conversation.
    second = greedy_reply(
        tiny_model_dir,
        [{"role": "system", "content": system}, {"role": "user", "content": "what is json?"}],
        10,
    )
    assert proc.stdout == f"{first}\n{second}\n"


def test_chat_remembers_the_conversation(tiny_model_dir: Path) -> None:
    cmd = [sys.executable, "-m", "fireside.cli", "chat", "--model", str(tiny_model_dir)]
    cmd += ["--temperature", "0", "--max-tokens", "6"]
    proc = subprocess.run(cmd, input="one\ntwo\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first = greedy_reply(tiny_model_dir, [{"role": "user", "content": "one"}], 6)
    history = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "two"},
    ]
    assert proc.stdout == f"{first}\n{greedy_reply(tiny_model_dir, history, 6)}\n"


def test_chat_reports_a_missing_model(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "fireside.cli", "chat", "--model", str(tmp_path / "nope")]
    proc = subprocess.run(cmd, input="hi\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
