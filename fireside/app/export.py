"""Feedback becomes training data: the JSONL `fireside train dpo` and `fireside train sft`
read, from the chats of users who consented.

DPO pairs come from sibling answers (regenerations of the same question): an answer rated
up is chosen over a sibling rated down or not rated, an unrated sibling over one rated down;
between siblings rated alike, the one the user went on chatting under is preferred.
SFT conversations are the branches that end in an answer rated up.

Imported messages (ChatGPT's export, or ours from elsewhere) are never training data: their
model label and content are whatever the file said. They are neither chosen, rejected nor
rated answers, and an SFT branch holding one is left out.

Tool steps are kept: an answer that called a tool is stored as the calling message, the tool's
result and the message after it, and a conversation exported without them would teach a model
to state a calculator's result without calling it. Such SFT lines carry the built-in tools'
list (`tools`), which the chat template renders as the app did. DPO compares two single
answer messages, so answers that called a tool are left out of pairs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.app.tool_turns import history_input
from fireside.store import conversations, feedback
from fireside.store.models import Conversation, Feedback, Message
from fireside.tools import builtin_tools, tool_specs

ExportFormat = Literal["dpo", "sft"]


def _turn(m: Message) -> dict[str, Any]:
    """A message as `fireside train` reads it: OpenAI's shape, tool calls and results too."""
    return history_input(m).model_dump(exclude_none=True)


def _kept(m: Message) -> bool:
    if m.role == "tool":
        return True
    return m.role in ("user", "assistant") and bool(m.content or m.tool_calls)


async def _prompt(
    db: AsyncSession, conversation: Conversation, last: Message
) -> list[dict[str, Any]]:
    """The conversation up to and including `last`, system prompt first."""
    return _turns(conversation, await conversations.branch(db, last.id))


def _turns(conversation: Conversation, path: list[Message]) -> list[dict[str, Any]]:
    turns = [_turn(m) for m in path if _kept(m)]
    if conversation.system_prompt:
        turns.insert(0, {"role": "system", "content": conversation.system_prompt})
    return turns


def _uses_tools(messages: list[dict[str, Any]]) -> bool:
    return any(m["role"] == "tool" or m.get("tool_calls") for m in messages)


def _preference(f: Feedback | None, continued: bool) -> tuple[int, int]:
    """A rating decides first; between answers rated alike, the one the user went on under."""
    return (0 if f is None else (1 if f.rating == "up" else -1), int(continued))


async def dpo_pairs(db: AsyncSession) -> list[dict[str, Any]]:
    questions = await feedback.regenerated_questions(db)
    siblings: dict[Any, list[tuple[Message, tuple[int, int]]]] = defaultdict(list)
    for m, f, continued in await feedback.answers_under(db, [q.id for q, _ in questions]):
        siblings[m.parent_id].append((m, _preference(f, continued)))
    pairs = []
    for question, conversation in questions:
        answers = siblings.get(question.id, [])
        prompt = await _prompt(db, conversation, question)
        single = [(m, score) for m, score in answers if not m.tool_calls]
        for chosen, chosen_score in single:
            for rejected, rejected_score in single:
                if chosen_score > rejected_score and chosen.content != rejected.content:
                    pairs.append(
                        {
                            "prompt": prompt,
                            "chosen": _turn(chosen),
                            "rejected": _turn(rejected),
                            "model": chosen.model,
                        }
                    )
    return pairs


async def sft_conversations(db: AsyncSession) -> list[dict[str, Any]]:
    out = []
    specs = tool_specs(builtin_tools())  # the list the app's tool loop renders
    for message, f, conversation in await feedback.rated_answers(db):
        if f.rating == "up" and message.content:
            path = await conversations.branch(db, message.id)
            if any(m.imported for m in path):
                continue  # SFT learns every answer of the branch: imported ones never
            messages = _turns(conversation, path)
            line: dict[str, Any] = {"messages": messages, "model": message.model}
            if _uses_tools(messages):
                line["tools"] = specs
            out.append(line)
    return out


async def export_lines(db: AsyncSession, fmt: ExportFormat) -> Iterator[str]:
    rows = await (dpo_pairs(db) if fmt == "dpo" else sft_conversations(db))
    return (json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
