"""`fireside chat --model DIR`: a terminal conversation with a model, streamed as it is written.

Each line on stdin is a user message; the reply streams to stdout. `/reset` forgets the
conversation, `/exit` (or end of input) quits, Ctrl-C stops a reply mid-way.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

import torch

from fireside.engine.config import EngineConfig
from fireside.engine.engine import Engine
from fireside.engine.types import SamplingParams
from fireside.errors import FiresideError
from fireside.model.pretrained import load_pretrained


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


async def _reply(engine: Engine, prompt: list[int], params: SamplingParams, out: TextIO) -> str:
    text = ""
    async for delta in engine.generate(prompt, params, f"chat-{id(prompt)}"):
        piece = delta.samples[0].text if delta.samples else ""
        text += piece
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    return text


def run(args: argparse.Namespace, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    bundle = load_pretrained(args.model, device=_device(args.device))
    if not bundle.tokenizer.chat_template:
        raise FiresideError(f"the model in {args.model!r} has no chat template to chat with")
    engine = Engine.from_pretrained(bundle, EngineConfig(max_num_seqs=1))
    interactive = stdin.isatty()
    system: list[dict[str, Any]] = (
        [{"role": "system", "content": args.system}] if args.system else []
    )
    messages = list(system)
    try:
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
            messages.append({"role": "user", "content": line})
            prompt = bundle.tokenizer.render_chat(messages, add_generation_prompt=True).ids
            room = engine.context_length - len(prompt)
            if room < 1:
                messages.pop()
                print(
                    f"fireside: the conversation ({len(prompt)} tokens) fills the model's context "
                    f"({engine.context_length}); /reset to start over",
                    file=sys.stderr,
                )
                continue
            params = SamplingParams(
                max_tokens=min(args.max_tokens, room),
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                min_p=args.min_p,
                repetition_penalty=args.repetition_penalty,
                seed=args.seed,
            )
            try:
                reply = asyncio.run(_reply(engine, prompt, params, stdout))
            except KeyboardInterrupt:  # stop this reply, keep the conversation
                stdout.write("\n")
                messages.pop()
                continue
            messages.append({"role": "assistant", "content": reply})
    finally:
        asyncio.run(engine.shutdown())
