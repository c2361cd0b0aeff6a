"""Feedback becomes training data: the JSONL `fireside train dpo` and `fireside train sft`
read, from the chats of users who consented.

DPO pairs come from sibling answers (regenerations of the same question): an answer rated
up is chosen over a sibling rated down or not rated, an unrated sibling over one rated down;
between siblings rated alike, the one the user went on chatting under is preferred.
SFT conversations are the branches that end in an answer rated up.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store import conversations, feedback
from fireside.store.models import Conversation, Feedback, Message

ExportFormat = Literal["dpo", "sft"]


def _turn(m: Message) -> dict[str, Any]:
    return {"role": m.role, "content": m.content}


async def _prompt(
    db: AsyncSession, conversation: Conversation, last: Message
) -> list[dict[str, Any]]:
    """The conversation up to and including `last`, system prompt first."""
    path = await conversations.branch(db, last.id)
    turns = [_turn(m) for m in path if m.role in ("user", "assistant") and m.content]
    if conversation.system_prompt:
        turns.insert(0, {"role": "system", "content": conversation.system_prompt})
    return turns


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
        for chosen, chosen_score in answers:
            for rejected, rejected_score in answers:
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
    for message, f, conversation in await feedback.rated_answers(db):
        if f.rating == "up" and message.content:
            out.append(
                {"messages": await _prompt(db, conversation, message), "model": message.model}
            )
    return out


async def export_lines(db: AsyncSession, fmt: ExportFormat) -> Iterator[str]:
    rows = await (dpo_pairs(db) if fmt == "dpo" else sft_conversations(db))
    return (json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
