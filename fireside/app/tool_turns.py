"""Answers of a model trained with Fireside's built-in tools: the generation task runs the
conversation through the tool loop (`fireside.tools.loop`) and stores what the loop makes as
messages of the tree, one path under the question:

    user → assistant (its tool_calls) → tool (result 1) → tool (result 2) → assistant (answer)

Events, on the same log and with the same ids and resume as `delta`:
- `delta` {"message_id", "text"}: text of the assistant message being written;
- `tool_call` {"message_id", "id", "name", "arguments"}: a call that message makes;
- `tool_result` {"message_id", "parent_id", "tool_call_id", "name", "content", "error",
  "sources"}: the stored tool message with the call's result (`sources`: the numbered file
  passages a search showed, else null);
- `message`: the next assistant message, once the results are in;
- `done`: the last one, the answer.

The assistant message that calls stays `streaming` while its tools run (so no other answer
starts in the conversation meanwhile, and a crash marks it `interrupted`); it is marked
`complete` in the same transaction that stores the next one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from fireside.api.chat import ChatJob
from fireside.api.errors import bad_request
from fireside.api.schemas import ChatMessageIn
from fireside.api.served import ServedModel
from fireside.api.tools import template_messages
from fireside.app.sources import Piece
from fireside.app.state import ChatState
from fireside.engine.types import (
    EngineClient,
    EngineStats,
    PromptTooLongError,
    RequestOutput,
    SamplingParams,
)
from fireside.store import conversations as store
from fireside.store.models import Message
from fireside.tools import Tool
from fireside.tools.loop import Done, TextDelta, ToolCallEvent, ToolResultEvent, run_with_tools

if TYPE_CHECKING:
    from fireside.app.generation import Generation

MAX_STEPS = 5  # generations in one answer: a model that calls tools forever stops
CONTEXT_FULL = "the tool results fill the model's context; no room is left for the answer"


def history_input(message: Message) -> ChatMessageIn:
    """A stored message as the chat template reads it, tool calls and results included."""
    calls = message.tool_calls or []
    if message.role == "tool":
        call = calls[0] if calls else {}
        return ChatMessageIn(
            role="tool",
            content=message.content,
            tool_call_id=call.get("id"),
            name=call.get("function", {}).get("name"),
        )
    return ChatMessageIn.model_validate(
        {"role": message.role, "content": message.content, "tool_calls": calls or None}
    )


class CountingEngine:
    """The served engine, counting the tokens of every step for the usage table."""

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        self.prompt_tokens += len(prompt_token_ids)
        stream = self.engine.generate(prompt_token_ids, params, request_id)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for out in stream:
                self.completion_tokens += sum(len(s.token_ids) for s in out.samples)
                yield out

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def is_healthy(self) -> bool:
        return self.engine.is_healthy()


@dataclass(frozen=True)
class NextMessage:
    """The model goes on after its tools' results: a new assistant message starts."""


ToolStep = ToolCallEvent | ToolResultEvent | NextMessage


class ToolSource:
    """The answer through the tool loop, as the generation task reads any source: text
    pieces, and the loop's steps in `Piece.tool` for the task to store (ToolTurn)."""

    def __init__(self, job: ChatJob, served: ServedModel, tools: list[Tool]) -> None:
        self.job, self.served, self.tools, self.model = job, served, tools, served.label
        self.request_id = f"{job.id}-0"  # the loop's request of the step running now

    async def stream(self) -> AsyncGenerator[Piece, None]:
        engine = CountingEngine(self.served.engine)
        events = run_with_tools(
            engine,
            self.served.tokenizer,
            template_messages(self.job.req.messages),
            self.tools,
            self.job.params,
            max_steps=MAX_STEPS,
            request_id=self.job.id,
        )
        step, context_full = 0, False
        try:
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, TextDelta | ToolCallEvent) and event.step != step:
                        step, self.request_id = event.step, f"{self.job.id}-{event.step}"
                        yield Piece(tool=NextMessage())
                    if isinstance(event, TextDelta):
                        yield Piece(event.text)
                    elif isinstance(event, ToolCallEvent | ToolResultEvent):
                        yield Piece(tool=event)
                    elif isinstance(event, Done) and event.messages[-1]["role"] == "tool":
                        # Results came in, but the context has no room for another generation.
                        yield Piece(tool=NextMessage())
                        context_full = True
        except PromptTooLongError as e:
            raise bad_request(str(e), "messages") from None
        yield Piece(usage=(engine.prompt_tokens, engine.completion_tokens))
        if context_full:
            raise bad_request(CONTEXT_FULL, "messages")

    async def abort(self) -> None:
        await self.served.engine.abort(self.request_id)


def _call_entry(event: ToolCallEvent) -> dict[str, Any]:
    # OpenAI's shape, as /v1 returns calls and as the template reads them back.
    return {
        "id": event.id,
        "type": "function",
        "function": {"name": event.name, "arguments": event.arguments},
    }


class ToolTurn:
    """Stores the loop's steps as they come and logs their events: `gen.message` is always the
    assistant message being written; tool results chain under it; after them the next
    assistant message starts under the last result."""

    def __init__(self, chat: ChatState, gen: Generation) -> None:
        from fireside.app.generation import stream_key

        self.chat, self.gen = chat, gen
        self.key = stream_key(gen.conversation_id)
        self.calls: list[dict[str, Any]] = []  # those of gen.message
        self.parent_id = gen.message.id  # where the next tool result goes

    async def apply(self, step: ToolStep, text: str) -> str:
        """Stores and logs one step; returns the text of the message being written then."""
        if isinstance(step, ToolCallEvent):
            await self.call(step, text)
        elif isinstance(step, ToolResultEvent):
            await self.result(step)
        else:
            await self.next_message(text)
            return ""
        return text

    async def call(self, event: ToolCallEvent, text: str) -> None:
        entry = _call_entry(event)
        self.calls.append(entry)
        message = self.gen.message
        async with self.chat.db.session() as db, self.chat.db.writing():
            # The text is final once the model calls: saved with the calls.
            await db.execute(
                update(Message)
                .where(Message.id == message.id)
                .values(content=text, tool_calls=list(self.calls))
            )
            await db.commit()
        message.content, message.tool_calls = text, list(self.calls)
        data = {"message_id": str(message.id), "id": event.id, "name": event.name}
        await self.chat.events.append(self.key, "tool_call", {**data, "arguments": event.arguments})

    async def result(self, event: ToolResultEvent) -> None:
        call = next((c for c in self.calls if c["id"] == event.id), None)
        searched = self.gen.file_search
        sources = searched.sources_for(event.content) if searched is not None else None
        async with self.chat.db.session() as db, self.chat.db.writing():
            tool = await store.add_message(
                db,
                self.gen.conversation_id,
                self.parent_id,
                "tool",
                event.content,
                tool_calls=[call] if call is not None else None,
                sources=sources,
            )
            await db.commit()
        await self.chat.events.append(
            self.key,
            "tool_result",
            {
                "message_id": str(tool.id),
                "parent_id": str(self.parent_id),
                "tool_call_id": event.id,
                "name": event.name,
                "content": event.content,
                "error": event.error,
                "sources": sources,  # a search of the chat's files: its numbered passages
            },
        )
        self.parent_id = tool.id

    async def next_message(self, text: str) -> None:
        """The calling message is complete and the next one starts, in one transaction: a
        message of this answer is `streaming` all along."""
        from fireside.app.generation import message_public

        old = self.gen.message
        async with self.chat.db.session() as db, self.chat.db.writing():
            await store.finish_message(db, old.id, text, "complete")
            new = await store.add_message(
                db,
                self.gen.conversation_id,
                self.parent_id,
                "assistant",
                "",
                status="streaming",
                model=old.model,
                stream_after=old.stream_after,
                worker=self.chat.worker,
                memory_used=old.memory_used,  # the same prompt's system part: the same memory
            )
            await store.touch(db, self.gen.conversation_id, current_leaf_id=new.id)
            await db.commit()
        old.content, old.status = text, "complete"
        self.gen.message, self.parent_id, self.calls = new, new.id, []
        await self.chat.events.append(self.key, "message", message_public(new))
