"""Start the real Fireside app (tools on, real search over files, a fresh SQLite data dir) with
its model scripted at the engine boundary, for the Playwright tests of files and citations.

For a question, the first generation writes a `search` call in the model's own call format,
the question's words as its query; the generation after the tool's result answers

    According to <source 1's file name>, <the first sentence of source 1's text> [1].

taken from the result the model was shown (so the citation is honest), or says it found
nothing. The model behind it is serve_tiny.py's tiny random one, marked as trained with
tools; it only sizes the context. Usage: serve_scripted.py PORT
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from fireside.api.served import ServedModel
from fireside.engine.types import (
    EngineClient,
    EngineStats,
    RequestOutput,
    SampleDelta,
    SamplingParams,
)
from fireside.model.tokenizer import Tokenizer
from fireside.model.tool_calls import tool_format

USER, TOOL, END = "<|user|>", "<|tool|>", "<|end|>"
NOTHING = "I found nothing about that in your files."
_FILE_BLOCK = re.compile(r'<file name="[^"]*">.*?</file>', re.DOTALL)
_SOURCE_1 = re.compile(r"^\[1\] (?P<name>.+?)(?: \(page \d+\))?: (?P<text>.*)$", re.MULTILINE)
_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)", re.DOTALL)


def question_of(turn: str) -> str:
    """The user's own words in a rendered user turn: attached files' blocks left out."""
    # Blocks first: a file's text may hold "<|end|>" as plain text.
    return _FILE_BLOCK.sub(" ", turn).split(END, 1)[0].strip()


def answer_from(result: str) -> str:
    """The scripted answer to a search result: source 1's file and first sentence, cited."""
    found = _SOURCE_1.search(result)
    if found is None:
        return NOTHING
    text = found["text"].strip()
    first = _SENTENCE.match(text)
    sentence = (first.group(1) if first else text).rstrip(".!?…")
    return f"According to {found['name']}, {sentence} [1]."


def script(prompt: str, tokenizer: Tokenizer) -> list[str]:
    """What the model writes for this prompt, in pieces."""
    turn = prompt.rsplit(USER, 1)[-1]  # the last question, and the turns after it
    if TOOL not in turn:
        words = " ".join(re.findall(r"\w+", question_of(turn)))
        fmt = tool_format(tokenizer)
        call = json.dumps({"name": "search", "arguments": {"query": words}})
        return [fmt.start + call, fmt.end]
    result = turn.rsplit(TOOL, 1)[-1].split(END, 1)[0]
    return re.findall(r"\S+\s*", answer_from(result))


class ScriptedSearchEngine:
    """The served engine, with every generation scripted (`script`)."""

    def __init__(self, engine: EngineClient, tokenizer: Tokenizer) -> None:
        self.engine, self.tokenizer = engine, tokenizer
        self.prompts: list[str] = []  # every prompt, decoded: what the model was shown

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        prompt = self.tokenizer.decode(prompt_ids)
        self.prompts.append(prompt)
        pieces = script(prompt, self.tokenizer)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            sample = SampleDelta(0, piece, [1], finish_reason="stop" if last else None)
            yield RequestOutput(request_id, [sample], prompt_ids, finished=last)

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def is_healthy(self) -> bool:
        return self.engine.is_healthy()


def mark_tools(model_dir: Path) -> None:
    """The model "trained with" the built-in tools: the chat app answers through the tool loop."""
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**config, "fireside_tools": True}))


def main() -> None:
    import uvicorn

    from fireside.api.app import create_app
    from fireside.app import ChatApp
    from fireside.engine import EngineConfig
    from fireside.server import load_served
    from fireside.settings import Settings
    from fireside.tools.knowledge import build_index

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve_tiny import build_model

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8766
    root = Path(tempfile.mkdtemp(prefix="fireside-e2e-scripted-"))
    data = root / "data"
    os.environ["FIRESIDE_DATA_DIR"] = str(data)  # where `search` reads the knowledge index
    model = build_model(root / "model")
    mark_tools(model)
    # An empty knowledge index: answers come from the files alone (and no minute is spent
    # indexing this machine's documentation on the first search).
    build_index(data / "knowledge.db", {})
    settings = Settings(
        data_dir=data,
        port=port,
        app_max_tokens=256,
        # Every spec signs up from 127.0.0.1: the per-address limits would stop them.
        signups_per_address=100_000,
        auth_failures_per_address=100_000,
    )

    async def load() -> ServedModel:
        served = await load_served(model, "scripted", "cpu", EngineConfig(max_num_seqs=4))
        served.engine = ScriptedSearchEngine(served.engine, served.tokenizer)
        return served

    app = create_app(
        "scripted",
        load,
        extensions=[ChatApp(settings)],
        allowed_hosts=settings.resolved_allowed_hosts(),
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
