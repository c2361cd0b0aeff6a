"""`fireside chat`: talk to a model in the terminal, or ask once from a script.

    fireside chat                          # a conversation: one line in, the reply streams out
    fireside chat "What is 15% of 240?"    # one answer, printed, then exit
    fireside chat --json "..."             # the whole exchange, tool steps included, as JSON

Replies run through the tool loop (`fireside.tools.loop`), so a model trained with Fireside's
tools (`"fireside_tools": true` in its generation_config.json) calculates, searches and runs
code; `--no-tools` turns them off, `--tools` on for any model. The answer goes to stdout and
tool steps to stderr, so a script reads only the answer. In a conversation `/reset` forgets it,
`/exit` (or end of input) quits, Ctrl-C stops a reply mid-way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import torch

from fireside.engine.config import EngineConfig
from fireside.engine.engine import Engine
from fireside.engine.types import PromptTooLongError, SamplingParams
from fireside.errors import FiresideError
from fireside.model.pretrained import Pretrained, default_model_dir, load_pretrained, uses_tools
from fireside.tools import Tool, builtin_tools
from fireside.tools.loop import (
    Done,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    final_text,
    run_with_tools,
)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _tools(args: argparse.Namespace, bundle: Pretrained) -> list[Tool]:
    on = uses_tools(bundle.generation_config) if args.tools is None else args.tools
    if not on:
        return []
    return builtin_tools(knowledge_db=Path(args.knowledge_db) if args.knowledge_db else None)


def _params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )


async def _reply(
    engine: Engine,
    bundle: Pretrained,
    messages: list[dict[str, Any]],
    tools: list[Tool],
    args: argparse.Namespace,
    out: TextIO | None,
    log: TextIO | None,
) -> Done:
    """One turn through the tool loop; text streams to `out`, tool steps to `log` (None: not
    written)."""
    done: Done | None = None
    events = run_with_tools(
        engine, bundle.tokenizer, messages, tools, _params(args), max_steps=args.max_steps
    )
    async for event in events:
        if isinstance(event, TextDelta) and out is not None:
            out.write(event.text)
            out.flush()
        elif isinstance(event, ToolCallEvent) and log is not None:
            log.write(f"[{event.name}] {event.arguments}\n")
        elif isinstance(event, ToolResultEvent) and log is not None:
            log.write(f"[{event.name} →] {event.content}\n")
        elif isinstance(event, Done):
            done = event
    assert done is not None  # the loop always ends with Done
    return done


def _one_shot(
    engine: Engine,
    bundle: Pretrained,
    messages: list[dict[str, Any]],
    tools: list[Tool],
    args: argparse.Namespace,
    stdout: TextIO,
) -> int:
    messages.append({"role": "user", "content": args.prompt})
    # With --json nothing streams and tool steps are in the JSON, not on stderr.
    out, log = (None, None) if args.json else (stdout, sys.stderr)
    done = asyncio.run(_reply(engine, bundle, messages, tools, args, out, log))
    if args.json:
        exchange = {
            "model": str(args.model or default_model_dir()),
            "tools": [t.name for t in tools],
            "messages": done.messages,
            "answer": final_text(done.messages),
            "finish_reason": done.finish_reason,
            "steps": done.steps,
        }
        stdout.write(json.dumps(exchange, ensure_ascii=False, indent=2) + "\n")
    else:
        stdout.write("\n")
    stdout.flush()
    return 0


def _conversation(
    engine: Engine,
    bundle: Pretrained,
    system: list[dict[str, Any]],
    tools: list[Tool],
    args: argparse.Namespace,
    stdin: TextIO,
    stdout: TextIO,
) -> int:
    interactive = stdin.isatty()
    messages = list(system)
    while True:
        if interactive:
            stdout.write("> ")
            stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        line = line.rstrip("\n")
        if line.strip() == "/reset":
            messages = list(system)
            continue
        if not line.strip():
            continue
        turn = [*messages, {"role": "user", "content": line}]
        try:
            done = asyncio.run(_reply(engine, bundle, turn, tools, args, stdout, sys.stderr))
        except PromptTooLongError as e:
            print(f"fireside: {e}; /reset to start over", file=sys.stderr)
            continue
        except KeyboardInterrupt:  # stop this reply, keep the conversation before it
            stdout.write("\n")
            continue
        stdout.write("\n")
        stdout.flush()
        messages = done.messages


def run(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if args.json and args.prompt is None:
        raise FiresideError("--json needs a PROMPT (it prints one exchange)")
    if args.max_steps < 1:
        raise FiresideError("--max-steps must be at least 1")
    model_dir = Path(args.model) if args.model else default_model_dir()
    quantize = getattr(args, "quantize", None)
    if quantize is not None:
        from fireside.model import quantized

        quantized.check_can_quantize(quantize, _device(args.device))
    bundle = load_pretrained(model_dir, device=_device(args.device))
    if quantize is not None:
        quantized.quantize_model(bundle.model, quantize)
    if not bundle.tokenizer.chat_template:
        raise FiresideError(f"the model in {str(model_dir)!r} has no chat template to chat with")
    tools = _tools(args, bundle)
    engine = Engine.from_pretrained(bundle, EngineConfig(max_num_seqs=1))
    system: list[dict[str, Any]] = (
        [{"role": "system", "content": args.system}] if args.system else []
    )
    try:
        if args.prompt is not None:
            return _one_shot(engine, bundle, list(system), tools, args, stdout)
        return _conversation(engine, bundle, system, tools, args, stdin, stdout)
    finally:
        asyncio.run(engine.shutdown())
