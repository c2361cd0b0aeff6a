"""`fireside eval`: every evaluation a model directory can take, then the report card."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fireside.eval.bpb import (
    EvalDataError,
    TextBPB,
    bits_per_byte,
    data_dir_documents,
    read_texts,
    tokenize_documents,
    xz_bits_per_byte,
)
from fireside.eval.chat_eval import run_chat_eval
from fireside.eval.humaneval import run_humaneval
from fireside.eval.report import EvalResults, write_report
from fireside.eval.special_tokens import SpecialTokenCount, count_special
from fireside.model.pretrained import load_pretrained
from fireside.sandbox import Limits


@dataclass
class EvalOptions:
    model: Path
    output: Path | None = None  # default: the model directory (a run directory)
    texts: Sequence[Path] = field(default_factory=list)  # held-out raw text for bpb
    data: Path | None = None  # or the val split of a `fireside data prepare` directory
    bpb_tokens: int | None = None  # cap on the tokens scored (whole documents)
    humaneval_limit: int | None = None  # None = all 164; 0 = skip
    humaneval_timeout_s: float = 10.0
    humaneval_mode: str = "completion"  # or "chat", for chat-tuned models
    chat: bool = True
    chat_tools: bool = False
    conversation: bool = False
    programs: bool = False  # the held-out function-writing requests (programs_eval)
    knowledge_db: Path | None = None  # default: the data directory's index
    overlap: Path | None = None  # `fireside data overlap --output` markdown, for the report
    device: str = "cpu"


def evaluate(opts: EvalOptions) -> tuple[EvalResults, Path]:
    if opts.humaneval_limit is not None and opts.humaneval_limit < 0:
        raise EvalDataError(f"--humaneval-limit must be 0 or more, got {opts.humaneval_limit}")
    if opts.bpb_tokens is not None and opts.bpb_tokens < 1:
        raise EvalDataError(f"--bpb-tokens must be positive, got {opts.bpb_tokens}")
    if opts.humaneval_timeout_s <= 0:
        raise EvalDataError(f"--humaneval-timeout must be positive, got {opts.humaneval_timeout_s}")
    bundle = load_pretrained(opts.model, device=opts.device)
    results = EvalResults()
    if opts.data:
        docs = data_dir_documents(opts.data, bundle.tokenizer, opts.bpb_tokens)
        results.bpb = bits_per_byte(bundle.model, docs)
        _say(f"bits per byte: {results.bpb.bits_per_byte:.4f}")
    for path in opts.texts:
        # Each file apart (say, held-out prose and held-out code), each beside xz on its bytes.
        texts = read_texts([path])
        scored = bits_per_byte(bundle.model, tokenize_documents(bundle.tokenizer, texts))
        xz = xz_bits_per_byte("".join(texts))
        results.texts.append(TextBPB(str(path), scored, xz))
        _say(f"bits per byte, {path}: {scored.bits_per_byte:.4f} (xz -9e: {xz:.4f})")
    if opts.humaneval_limit != 0:
        limits = Limits(timeout_s=opts.humaneval_timeout_s, cpu_s=int(opts.humaneval_timeout_s))
        results.humaneval = run_humaneval(
            bundle,
            limit=opts.humaneval_limit,
            limits=limits,
            mode=opts.humaneval_mode,
        )
        _say(f"HumanEval pass@1: {100 * results.humaneval.pass_at_1:.1f}%")
    if opts.chat and not bundle.tokenizer.chat_template:
        _say("chat eval skipped: the model's tokenizer has no chat template")
    elif opts.chat:
        results.chat = run_chat_eval(bundle)
        _say(f"chat eval: {100 * results.chat.accuracy:.1f}%")
    if opts.chat_tools:
        from fireside.eval.tool_eval import run_tool_eval
        from fireside.tools.knowledge import default_index_path

        results.tools = run_tool_eval(bundle, opts.knowledge_db or default_index_path())
        for category in ("arithmetic", "lookup", "honesty", "identity"):
            right, n = results.tools.score(category)
            _say(f"{category}: {right}/{n}")
    if opts.conversation:
        from fireside.eval.conversation_eval import GROUPS, run_conversation_eval
        from fireside.tools.knowledge import default_index_path

        results.conversation = run_conversation_eval(
            bundle, opts.knowledge_db or default_index_path()
        )
        for group in GROUPS:
            right, n = results.conversation.score(group)
            _say(f"conversation, {group}: {right}/{n}")
    if opts.programs:
        from fireside.eval.programs_eval import run_programs_eval
        from fireside.tools.knowledge import default_index_path

        results.programs = run_programs_eval(bundle, opts.knowledge_db or default_index_path())
        right, n = results.programs.score()
        _say(f"programs: {right}/{n}")
    results.special_tokens = special_token_counts(results, bundle.tokenizer.special_token_texts())
    for name, count in results.special_tokens.items():
        _say(f"{name}: {count} answers hold special-token text")
    if opts.overlap is not None:
        if not opts.overlap.is_file():
            raise EvalDataError(f"--overlap {opts.overlap}: no such file")
        results.overlap = opts.overlap.read_text(encoding="utf-8")
    out = opts.output or opts.model
    report = write_report(out, opts.model, bundle.model.config, results)
    _say(f"report card: {report}")
    return results, report


def special_token_counts(
    results: EvalResults, specials: Sequence[str]
) -> dict[str, SpecialTokenCount]:
    """Per eval that ran, how many of its answers hold a special token's text."""
    answers: dict[str, list[str]] = {}
    if results.humaneval:
        answers["HumanEval"] = [p.completion for p in results.humaneval.problems]
    if results.chat:
        answers["chat eval"] = [a.reply for a in results.chat.answers]
    if results.tools:
        answers["tool evals"] = [a.answer for a in results.tools.answers]
    if results.conversation:
        answers["conversation eval"] = [a.answer for a in results.conversation.answers]
    if results.programs:
        answers["programs"] = [a.answer for a in results.programs.answers]
    return {name: count_special(given, specials) for name, given in answers.items()}


def _say(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
