"""Evaluation: cached greedy decoding, bits per byte, HumanEval plumbing, chat eval, report card."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fireside.eval import chat_eval, humaneval
from fireside.eval.bpb import EvalDataError, bits_per_byte, read_texts, windows
from fireside.eval.chat_eval import TASKS, ChatTask, is_correct
from fireside.eval.generate import PromptTooLong, generate_all, greedy_generate
from fireside.model import Tokenizer, Transformer, load_pretrained
from fireside.sandbox import Limits, run_python
from tests.conftest import tiny_config

FAST = Limits(timeout_s=10.0, cpu_s=10, memory_bytes=1 << 30)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tokenizer: Tokenizer) -> Transformer:
    torch.manual_seed(0)
    m = Transformer(tiny_config(tokenizer.vocab_size))
    m.init_weights(std=0.5)
    return m.eval()


def test_cached_greedy_decoding_matches_full_recompute(
    model: Transformer, tokenizer: Tokenizer
) -> None:
    prompt = tokenizer.encode("def add(a, b):\n    return")
    text = greedy_generate(model, tokenizer, prompt, max_new_tokens=12)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert text == tokenizer.decode(ids[len(prompt) :])


def test_generation_stops_at_stop_tokens_strings_and_context(
    model: Transformer, tokenizer: Tokenizer
) -> None:
    prompt = tokenizer.encode("import json\n")
    full = greedy_generate(model, tokenizer, prompt, max_new_tokens=10)
    with torch.no_grad():
        first = int(model(torch.tensor([prompt]))[0, -1].argmax())
    assert greedy_generate(model, tokenizer, prompt, 10, stop_token_ids=[first]) == ""
    stop = full[2:5]
    cut = greedy_generate(model, tokenizer, prompt, 10, stop_strings=[stop])
    assert cut == full[: full.find(stop)]
    context = model.config.max_position_embeddings
    ids = [5] * (context - 3)
    near_end = greedy_generate(model, tokenizer, ids, max_new_tokens=50)
    with torch.no_grad():
        for _ in range(3):  # room for exactly three more tokens
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert near_end == tokenizer.decode(ids[context - 3 :])
    with pytest.raises(PromptTooLong):
        greedy_generate(model, tokenizer, [5] * context, max_new_tokens=1)


def test_engine_batch_generation_matches_the_reference_decoder(tiny_model_dir: Path) -> None:
    bundle = load_pretrained(tiny_model_dir)
    tok = bundle.tokenizer
    prompts = [tok.encode(t) for t in ("import json\n", "def f(x):\n", "class A:\n    ")]
    prompts.append([5] * (bundle.context_length - 4))  # room for four tokens only
    prompts.append([5] * bundle.context_length)  # no room at all
    stops = ("\n\n",)
    got = generate_all(bundle, prompts, max_new_tokens=24, stop_strings=stops)
    want = [
        greedy_generate(bundle.model, tok, p, 24, bundle.stop_token_ids, stops)
        for p in prompts[:-1]
    ]
    assert got == [*want, None]


def each_prompt(
    fake: Callable[[Transformer, Tokenizer, list[int]], str],
) -> Callable[..., list[str | None]]:
    """A stand-in for generate_all from one that answers a single prompt."""
    return lambda bundle, prompts, *a, **k: [
        fake(bundle.model, bundle.tokenizer, list(p)) for p in prompts
    ]


def test_bits_per_byte_is_nats_over_bytes(model: Transformer, tokenizer: Tokenizer) -> None:
    text = "The quick brown fox jumps over the lazy dog. Ünïcödé counts in bytes."
    ids = [0, *tokenizer.encode(text)]
    result = bits_per_byte(model, [(ids, len(text.encode()))])
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    nats = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
    assert result.bytes == len(text.encode()) > len(text)
    assert result.tokens == len(ids) - 1
    assert result.bits_per_byte == pytest.approx(nats / (math.log(2) * result.bytes), rel=1e-5)
    # A short context scores the same tokens, each once, in windows.
    short = bits_per_byte(model, [(ids, len(text.encode()))], context=7, batch_size=3)
    assert short.tokens == result.tokens
    covered = [t for _, ys in windows(ids, 7) for t in ys]
    assert covered == ids[1:]


def test_bpb_input_errors(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="does not exist"):
        read_texts([tmp_path / "missing.txt"])
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(EvalDataError, match="no text to evaluate"):
        read_texts([tmp_path])
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(EvalDataError, match="not readable UTF-8"):
        read_texts([tmp_path / "bad.txt"])


def test_humaneval_programs_pass_with_the_canonical_solution_and_fail_without() -> None:
    problems = humaneval.load_problems(limit=3)
    assert [p["task_id"] for p in problems] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for p in problems:
        assert run_python(humaneval.program(p, p["canonical_solution"]), FAST).passed
        assert not run_python(humaneval.program(p, "    return None\n"), FAST).passed


def test_run_humaneval_scores_what_the_model_writes(
    model: Transformer, tokenizer: Tokenizer, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_pretrained(tiny_model_dir)
    bundle.model.config.max_position_embeddings = 4096  # RoPE has no table; prompts must fit
    solutions = {p["prompt"]: p["canonical_solution"] for p in humaneval.load_problems(4)}
    right_on = {"HumanEval/0", "HumanEval/2"}

    def fake_generate(
        model: Transformer, tok: Tokenizer, ids: list[int], *a: object, **k: object
    ) -> str:
        prompt = tok.decode(ids[1:])
        task = next(p for p in humaneval.load_problems(4) if p["prompt"] == prompt)
        return solutions[prompt] if task["task_id"] in right_on else "    return 0\n"

    monkeypatch.setattr(humaneval, "generate_all", each_prompt(fake_generate))
    result = humaneval.run_humaneval(bundle, limit=4, limits=FAST)
    assert result.pass_at_1 == 0.5
    assert {p.task_id for p in result.problems if p.passed} == right_on


def test_humaneval_chat_mode_takes_the_code_from_the_reply(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_pretrained(tiny_model_dir)
    bundle.model.config.max_position_embeddings = 4096
    problems = humaneval.load_problems(3)
    asked: list[str] = []

    def fake_generate(
        model: Transformer, tok: Tokenizer, ids: list[int], *a: object, **k: object
    ) -> str:
        asked.append(tok.decode(ids))
        p = next(p for p in problems if p["prompt"] in asked[-1])
        if p["task_id"] == "HumanEval/0":  # the whole function, fenced, with chatter around it
            return f"Sure!\n```python\n{p['prompt']}{p['canonical_solution']}```\nDone."
        if p["task_id"] == "HumanEval/1":  # only the body, unfenced
            return p["canonical_solution"]
        return "```python\ndef truncate_number(number):\n    return 0.0\n```"

    monkeypatch.setattr(humaneval, "generate_all", each_prompt(fake_generate))
    result = humaneval.run_humaneval(bundle, limit=3, limits=FAST, mode="chat")
    assert [p.passed for p in result.problems] == [True, True, False]
    assert asked[0].startswith("<|endoftext|><|user|>Complete the following Python function")
    assert asked[0].endswith("<|end|><|assistant|>")


def test_chat_answers_are_checked_strictly() -> None:
    add = ChatTask("arithmetic", "What is 7 + 5?", "12")
    assert is_correct(add, "12")
    assert is_correct(add, "The answer is 12.")
    assert not is_correct(add, "7 + 5 = 12")  # the first number is the one that counts
    assert not is_correct(add, "112")
    paris = ChatTask("facts", "capital of France?", "Paris")
    assert is_correct(paris, "It is paris.")
    assert not is_correct(paris, "Parisian")
    assert len(TASKS) >= 20 and len({t.question for t in TASKS}) == len(TASKS)


def test_chat_eval_scores_the_replies(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_pretrained(tiny_model_dir)
    prompts: list[str] = []

    def fake_generate(
        model: Transformer, tok: Tokenizer, ids: list[int], *a: object, **k: object
    ) -> str:
        prompts.append(tok.decode(ids))
        task = next(t for t in TASKS if t.question in prompts[-1])
        return task.answer if task.category == "arithmetic" else "no idea"

    monkeypatch.setattr(chat_eval, "generate_all", each_prompt(fake_generate))
    result = chat_eval.run_chat_eval(bundle)
    assert result.by_category["arithmetic"] == 1.0
    assert result.by_category["facts"] == 0.0
    assert prompts[0].endswith("<|end|><|assistant|>")  # asked through the chat template


def test_eval_command_writes_the_report_card(tiny_model_dir: Path, tmp_path: Path) -> None:
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("def f(x):\n    return x + 1\n" * 20)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 5.0 / (s + 1)}) + "\n" for s in range(10))
        + '{"step": 10, "lo'  # a killed run's last half line is skipped
    )
    cmd = [sys.executable, "-m", "fireside.cli", "eval", "--model", str(tiny_model_dir)]
    cmd += ["--output", str(run), "--text", str(held_out), "--humaneval-limit", "2"]
    overlap = tmp_path / "overlap.md"
    overlap.write_text("| eval set | items |\n|---|---|\n| chat eval | 22 |\n")
    cmd += ["--overlap", str(overlap)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    report = (run / "report.md").read_text()
    assert "| bits per byte, held_out.txt |" in report and "xz -9e:" in report
    assert "| HumanEval pass@1 |" in report and "HumanEval/1" in report
    assert "| chat eval |" in report
    assert "![loss curve](loss_curve.png)" in report and "| loss | 5.0000 | 0.5000 | 10 |" in report
    for png in ("loss_curve.png", "chat_eval.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run / "eval.json").read_text())
    [scored] = results["texts"]
    assert scored["model"]["bits_per_byte"] > 0
    # Twenty copies of one line compress far below a random model's bits per byte.
    assert 0 < scored["xz_bits_per_byte"] < scored["model"]["bits_per_byte"]
    assert "does not beat xz" in report
    assert len(results["humaneval"]["problems"]) == 2
    assert len(results["chat"]["answers"]) == len(TASKS)
    # Every eval's answers scanned for special-token text, and the overlap table carried over.
    assert re.search(r"\| HumanEval \| \d+/2 \|", report)
    assert re.search(rf"\| chat eval \| \d+/{len(TASKS)} \|", report)
    assert results["special_tokens"]["chat eval"]["answers"] == len(TASKS)
    assert "### Eval sets' overlap with training" in report and "| chat eval | 22 |" in report


def test_eval_command_bad_inputs_are_clear_errors(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fireside.cli import main

    base = ["eval", "--humaneval-limit", "0", "--no-chat"]
    assert main([*base, "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    missing = ["--output", str(tmp_path / "r"), "--text", str(tmp_path / "missing.txt")]
    assert main([*base, "--model", str(tiny_model_dir), *missing]) == 2
    err = capsys.readouterr().err
    assert "missing.txt" in err and "does not exist" in err
    assert main(["eval", "--model", str(tiny_model_dir), "--humaneval-limit", "-1"]) == 2
    assert "--humaneval-limit must be 0 or more" in capsys.readouterr().err


def test_bpb_refuses_data_prepared_with_another_tokenizer(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from fireside.data.prepare import prepare
    from fireside.errors import DataError, TokenizerError
    from fireside.eval.bpb import data_dir_documents
    from fireside.model import train_tokenizer
    from tests.conftest import stdlib_texts

    src = tmp_path / "src"
    src.mkdir()
    for i, text in enumerate(stdlib_texts(60)):
        (src / f"{i}.py").write_text(text)
    other = train_tokenizer(stdlib_texts(10), vocab_size=300)
    prepare([src], other, tmp_path / "data", progress=False, val_fraction=0.1)
    ours = load_pretrained(tiny_model_dir).tokenizer
    with pytest.raises(TokenizerError, match="different tokenizer"):
        next(data_dir_documents(tmp_path / "data", ours))
    with pytest.raises(DataError, match=r"manifest\.json.* not found"):
        next(data_dir_documents(tmp_path, ours))


def test_a_base_model_without_chat_template_skips_the_chat_eval(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import shutil

    from fireside.eval.run import EvalOptions, evaluate

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").unlink()
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template")
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    text = tmp_path / "t.txt"
    text.write_text("x = 1\n" * 30)
    results, report = evaluate(EvalOptions(model=base, texts=[text], humaneval_limit=0))
    assert results.chat is None and results.humaneval is None and len(results.texts) == 1
    assert "chat eval" not in report.read_text()


def test_xz_bits_per_byte_is_the_compressed_size() -> None:
    from fireside.eval.bpb import xz_bits_per_byte

    repetitive = "the same words again and again " * 200
    rng = random.Random(0)
    varied = "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(6000))
    assert xz_bits_per_byte(repetitive) < 0.5 < xz_bits_per_byte(varied) < 8
