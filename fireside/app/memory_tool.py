"""The `memory` tool: "Remember that …" in a question stores a fact the user can see and undo.

A small model cannot be trusted to decide on its own what to remember, so the app decides, by
the question's own words: a question that starts with "Remember (that) …" saves the rest as a
memory fact before the answer is written. The save is shown as a step of the answer, as a
tool the model called would be (`memory  I prefer metric units → Saved to memory`), so the
user sees what was kept and can undo it there (the page deletes the fact) or in Settings.

The step is stored like any tool step (an assistant message with the call, a tool message
with the result), but it is the app's doing, not the model's: it is left out of the prompts of
later turns (`is_memory_step`). The fact itself reaches the model through the memory block of
the system prompt, which already holds it when the answer starts.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.app import memory
from fireside.app.sources import AnswerSource, Piece
from fireside.app.tool_turns import NextMessage
from fireside.store import memory as store
from fireside.store.models import Message, User
from fireside.tools.loop import ToolCallEvent, ToolResultEvent

NAME = "memory"
# "Remember that …", "remember: …", "Please remember …" at the start of the question only: a
# question that merely mentions remembering ("Do you remember …?") saves nothing.
_REMEMBER = re.compile(
    r"^\s*(?:please[\s,]+)?remember(?:\s+that)?\s*[:,]?\s+(?P<fact>\S.*)$",
    re.IGNORECASE | re.DOTALL,
)
SAVED = "Saved to memory: "
ALREADY = "Already in memory: "
OFF = "error: memory is off; turn it on in Settings for Fireside to remember things"


def wanted_fact(question: str) -> str | None:
    """The fact a question asks to be remembered, or None."""
    found = _REMEMBER.match(question)
    if found is None or question.rstrip().endswith("?"):
        return None
    fact = found["fact"].strip()
    return None if fact.lower() in ("that", "this", "it") else fact


def is_memory_step(message: Message) -> bool:
    """The app's memory step: the call (an assistant message with no text and only memory
    calls) or its result. Prompts leave both out: the model never made them."""
    calls = message.tool_calls or []
    if not calls or any(c.get("function", {}).get("name") != NAME for c in calls):
        return False
    return message.role == "tool" or (message.role == "assistant" and not message.content)


async def remember(db: AsyncSession, user_id: uuid.UUID, question: str) -> MemoryStep | None:
    """Saves the fact the question asks to be remembered (committed at once, before the answer
    reads the user's memory) and returns the step that shows it; None when nothing was asked."""
    fact = wanted_fact(question)
    if fact is None:
        return None
    user = await db.get(User, user_id)
    if user is None or not user.memory_enabled:
        return MemoryStep(fact, OFF)
    if len(fact) > memory.MAX_FACT:
        return MemoryStep(fact, f"error: a memory fact is at most {memory.MAX_FACT} characters")
    facts = await store.list_facts(db, user_id)
    if any(f.content == fact for f in facts):
        return MemoryStep(fact, ALREADY + fact)
    if len(facts) >= memory.MAX_FACTS:  # read at call time: tests lower it
        limit = memory.MAX_FACTS
        return MemoryStep(fact, f"error: memory holds at most {limit} facts; delete one first")
    await store.add_fact(db, user_id, fact)
    await db.commit()
    return MemoryStep(fact, SAVED + fact)


@dataclass(frozen=True)
class MemoryStep:
    fact: str
    result: str  # what the step shows: saved, already there, or why not ("error: …")

    def around(self, source: AnswerSource) -> AnswerSource:
        return _StepThenAnswer(self, source)


class _StepThenAnswer:
    """The memory step (call, result, then the next message), then the answer's own source."""

    def __init__(self, step: MemoryStep, source: AnswerSource) -> None:
        self.step, self.source, self.model = step, source, source.model

    async def stream(self) -> AsyncGenerator[Piece, None]:
        call_id = f"call_memory_{uuid.uuid4().hex[:12]}"
        arguments = json.dumps({"fact": self.step.fact})
        yield Piece(tool=ToolCallEvent(call_id, NAME, arguments, step=0))
        failed = self.step.result.startswith("error: ")
        yield Piece(tool=ToolResultEvent(call_id, NAME, self.step.result, failed, step=0))
        yield Piece(tool=NextMessage())
        pieces = self.source.stream()
        try:
            async for piece in pieces:
                yield piece
        finally:
            await pieces.aclose()

    async def abort(self) -> None:
        await self.source.abort()
