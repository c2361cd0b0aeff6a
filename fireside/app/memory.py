"""Custom instructions and memory: what goes into the system prompt on the user's behalf.

Custom instructions (`about_me`, `response_style`) are copied into a conversation's system
prompt when it is made, so a chat keeps the instructions it began with and a changed setting
reaches new chats only. Memory facts are added at prompt time instead, to every new answer
while memory is on: deleting a fact (or turning memory off) takes it out of the next answer
of any chat, and each answer records whether it used them (`memory_used`).
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import bad_request
from fireside.store import memory as store
from fireside.store.models import MemoryFact, User

MAX_FACT = 500  # characters in one fact
MAX_FACTS = 100  # facts a user keeps
MAX_INSTRUCTIONS = 1500  # characters in about_me, and in response_style
MEMORY_HEADING = "Things the user asked you to remember:"


def instructions_prompt(user: User, system_prompt: str | None) -> str | None:
    """The new conversation's system prompt: the one asked for, then the user's custom
    instructions (None when there is nothing at all)."""
    parts = [system_prompt] if system_prompt else []
    if user.about_me:
        parts.append(f"About the user:\n{user.about_me}")
    if user.response_style:
        parts.append(f"How the user wants you to answer:\n{user.response_style}")
    return "\n\n".join(parts) or None


def memory_prompt(facts: list[MemoryFact]) -> str:
    return "\n".join([MEMORY_HEADING, *(f"- {f.content}" for f in facts)])


async def memory_for(db: AsyncSession, user_id: uuid.UUID) -> str | None:
    """The memory block for an answer's system prompt, or None when memory is off or empty."""
    user = await db.get(User, user_id)
    if user is None or not user.memory_enabled:
        return None
    facts = await store.list_facts(db, user_id)
    return memory_prompt(facts) if facts else None


async def add_fact(db: AsyncSession, user: User, content: str) -> MemoryFact:
    if await store.count_facts(db, user.id) >= MAX_FACTS:
        raise bad_request(
            f"memory holds at most {MAX_FACTS} facts; delete one before adding another",
            "content",
        )
    fact = await store.add_fact(db, user.id, content)
    await db.commit()
    return fact


async def edit_fact(db: AsyncSession, fact: MemoryFact, content: str) -> MemoryFact:
    await store.edit_fact(db, fact, content)
    await db.commit()
    return fact


async def delete_fact(db: AsyncSession, fact: MemoryFact) -> None:
    await store.delete_fact(db, fact)
    await db.commit()
