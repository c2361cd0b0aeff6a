"""`fireside chat`: a real process, fed on stdin or given one PROMPT, printing the model's
greedy replies, with the built-in tools when the model was trained with them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fireside.cli import main
from fireside.model import load_pretrained
from fireside.model.pretrained import default_model_dir
from fireside.model.tool_calls import FIRESIDE, parse_tool_calls
from fireside.tools import builtin_tools, tool_specs
from fireside.tools.loop import TURN_STARTS, call_constraint


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


def chat(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`fireside chat ARGS` in this process (a process start costs seconds: the tests above
    show the real one)."""
    capsys.readouterr()
    code = main(["chat", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_shot_prints_the_answer_and_exits(tiny_model_dir: Path) -> None:
    cmd = [sys.executable, "-m", "fireside.cli", "chat", "hello there"]
    cmd += ["--model", str(tiny_model_dir), "--temperature", "0", "--max-tokens", "8"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr
    expected = greedy_reply(tiny_model_dir, [{"role": "user", "content": "hello there"}], 8)
    assert proc.stdout == f"{expected.rstrip(chr(0xFFFD))}\n"


def tools_model_dir(model_dir: Path, tmp_path: Path) -> Path:
    """A tiny model marked as trained with Fireside's tools."""
    path = tmp_path / "with-tools"
    shutil.copytree(model_dir, path)
    config = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**config, "fireside_tools": True}))
    return path


def greedy_with_tools(model_dir: Path, question: str, max_tokens: int) -> str:
    """The first reply with the built-in tools in the prompt, as the tool loop reads it."""
    bundle = load_pretrained(model_dir)
    specs = tool_specs(builtin_tools())
    messages = [{"role": "user", "content": question}]
    ids = bundle.tokenizer.render_chat(messages, add_generation_prompt=True, tools=specs).ids
    stops = set(bundle.stop_token_ids) | {bundle.tokenizer.token_id(t) for t in TURN_STARTS}
    # The loop's grammar: free text is whole characters, calls are of the offered tools.
    ends = [i for i in stops if i is not None]
    constraint = call_constraint(bundle.tokenizer, builtin_tools(), ends)()
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = bundle.model(torch.tensor([ids + out]))[0, -1]
            allowed = constraint.allowed(logits.shape[-1])
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
            nxt = int(logits.argmax())
            if nxt in stops:
                break
            constraint.accept(nxt)
            out.append(nxt)
    content, calls = parse_tool_calls(bundle.tokenizer.decode(out), FIRESIDE)
    assert not calls  # a random model writes no valid call in a few tokens
    # A reply cut off by max_tokens inside a UTF-8 character: the streaming detokenizer holds
    # the partial bytes back, where a whole decode shows U+FFFD.
    return (content or "").rstrip("\ufffd")


def test_tools_follow_the_model_and_json_shows_the_exchange(
    api_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    # api_model_dir: a 1024-token context, room for the tools' schemas in the prompt.
    model = tools_model_dir(api_model_dir, tmp_path)
    common = ["--model", str(model), "--temperature", "0", "--max-tokens", "6", "--json"]
    code, out, err = chat(capsys, "What is 2 + 2?", *common)
    assert code == 0, err
    exchange = json.loads(out)
    assert exchange["tools"] == ["calculator", "search", "python"]
    answer = greedy_with_tools(model, "What is 2 + 2?", 6)
    assert exchange["answer"] == answer
    assert exchange["messages"] == [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": answer},
    ]
    assert exchange["steps"] == 1 and exchange["finish_reason"] in ("stop", "length")

    code, out, err = chat(capsys, "What is 2 + 2?", *common, "--no-tools")
    assert code == 0, err
    exchange = json.loads(out)
    assert exchange["tools"] == []
    plain = greedy_reply(model, [{"role": "user", "content": "What is 2 + 2?"}], 6)
    assert exchange["answer"] == plain
    # A model not marked for tools gets none unless asked.
    short = ["hi", "--model", str(api_model_dir), "--json", "--max-tokens", "2"]
    assert json.loads(chat(capsys, *short)[1])["tools"] == []
    tools = json.loads(chat(capsys, *short, "--tools")[1])["tools"]
    assert tools == ["calculator", "search", "python"]


def test_without_model_the_bundled_one_answers(
    capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    code, out, err = chat(capsys, "Who are you?", "--max-tokens", "4", "--json", "--device", "cpu")
    assert code == 0, err
    exchange = json.loads(out)
    assert exchange["model"] == str(default_model_dir())
    assert exchange["messages"][-1]["role"] == "assistant"


def test_bad_flags_are_clear_errors(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = chat(capsys, "--model", str(tiny_model_dir), "--json")
    assert code == 2 and "--json needs a PROMPT" in err
    code, _, err = chat(capsys, "hi", "--model", str(tiny_model_dir), "--max-steps", "0")
    assert code == 2 and "--max-steps must be at least 1" in err
    with pytest.raises(SystemExit):
        main(["chat", "hi", "--tools", "--no-tools"])
    assert "not allowed with" in capsys.readouterr().err
