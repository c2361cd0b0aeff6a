"""Generation as a server-side task, apart from the HTTP request that asked for it.

The user message is stored before anything is generated; the task streams from the served
engine through the OpenAI routes' own ChatJob (same chat template, same sampling checks),
appends every event to the conversation's event log, keeps the partial text in the database
as it grows, and stores the answer with its final status. A client leaving changes nothing;
`stop` (from any process, through the broker) ends it as `stopped`; a shutdown as
`interrupted`; a crash is found and marked `interrupted` at the next start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import APIError, bad_request
from fireside.api.sampling import cache_salt
from fireside.api.schemas import (
    ChatMessageIn,
)
from fireside.api.served import ServedModel
from fireside.api.state import AppState
from fireside.app import files
from fireside.app.connected import connection_named
from fireside.app.errors import conflict, too_many
from fireside.app.file_prompt import REMOTE_BUDGET_CHARS, render_attachments
from fireside.app.file_search import FileSearch
from fireside.app.keys import user_cache_identity
from fireside.app.memory import memory_for
from fireside.app.memory_tool import is_memory_step, remember
from fireside.app.projects import system_prompt
from fireside.app.schemas import MessagePublic
from fireside.app.sources import AnswerSource, ReadAhead, RemoteSource, local_source
from fireside.app.state import ChatState
from fireside.app.tool_turns import ToolTurn, history_input
from fireside.store import conversations as store
from fireside.store import files as file_store
from fireside.store.group_commit import GroupCommit
from fireside.store.models import Conversation, File, Message, Usage, now
from fireside.store.text import storable
from fireside.tools import Tool, builtin_tools

log = logging.getLogger(__name__)

# How often the growing answer is written to the database: what a crash can lose at most.
FLUSH_EVERY_S = 1.0
TITLE_WORDS = 8
BUSY = "an answer is still being written in this conversation; stop it first"


def stream_key(conversation_id: uuid.UUID) -> str:
    return f"conversation:{conversation_id}"


def message_public(message: Message) -> dict[str, Any]:
    return MessagePublic.model_validate(message).model_dump(mode="json")


def title_from(text: str) -> str:
    words = text.split()
    title = " ".join(words[:TITLE_WORDS])
    return (title[:80] + "…") if len(title) > 80 else title or "New chat"


@dataclass
class _Answer:
    """What the reader of one answer has streamed so far."""

    message_id: uuid.UUID  # the message being written (a tool step starts the next one)
    text: str = ""
    usage: tuple[int, int] | None = None
    flushed_at: float = -FLUSH_EVERY_S  # the first text is saved at once, then once a second
    waiting: bool = False  # awaiting the next piece: the one moment an end may cancel it
    saving: asyncio.Task[None] | None = None  # the partial text's write, beside the stream
    finished: bool = False  # the source ran to its end


@dataclass
class Generation:
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    message: Message  # the assistant message being written (status streaming)
    source: AnswerSource
    pieces: ReadAhead  # the source's stream, begun before the turn was stored
    stream_after: str | None
    stopping: bool = False  # a user's stop (else an end is a shutdown: interrupted)
    # The conversation's title once answered, if it has none: the first words of the branch's
    # first question (known at the start, so the finish reads nothing back).
    title: str | None = None
    # Set to end the answer. Only the wait for the next piece is cut, never a database or
    # event-log write half done (a cancelled Redis or asyncpg call can spoil its connection).
    end: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # The answer's search over the chat's files (None: the chat has none): the sources of
    # each result it gave, for the tool message.
    file_search: FileSearch | None = field(default=None, repr=False)


class Generations:
    """This process's running generations, by conversation (one at a time in each)."""

    def __init__(self, chat: ChatState, api: AppState) -> None:
        self.chat = chat
        self.api = api
        self.running: dict[uuid.UUID, Generation] = {}
        self.starting: Counter[uuid.UUID] = Counter()  # by user: sends not yet running
        # Answers' starts, partial saves and finishes that come together share a transaction.
        self.writes = GroupCommit(chat.db)

    # --- starting ---

    def in_flight(self, user_id: uuid.UUID) -> int:
        running = sum(1 for g in self.running.values() if g.user_id == user_id)
        return running + self.starting[user_id]

    async def start(
        self,
        db: AsyncSession,
        conversation: Conversation,
        parent: Message | None,
        user_content: str | None,
        file_ids: list[uuid.UUID] | None = None,
    ) -> Generation:
        """Stores the new user message (if any, with the caller's files `file_ids`) and an empty assistant message under it, then
        starts the task. The caller follows `stream_key` from `stream_after`. A user with
        max_answers_per_user answers in writing already is answered 429: one user's burst
        of sends must not take every database connection and engine slot."""
        user_id = conversation.user_id
        cap = self.chat.settings.max_answers_per_user
        if self.in_flight(user_id) >= cap:  # counted before any await: a burst sees it
            raise too_many(f"{cap} answers are being written for you already; retry when one ends")
        self.starting[user_id] += 1
        try:
            return await self._start(db, conversation, parent, user_content, file_ids or [])
        finally:
            self.starting[user_id] -= 1
            if not self.starting[user_id]:
                del self.starting[user_id]

    async def _start(
        self,
        db: AsyncSession,
        conversation: Conversation,
        parent: Message | None,
        user_content: str | None,
        file_ids: list[uuid.UUID],
    ) -> Generation:
        served = self.api.ready()
        if await store.streaming_message(db, conversation.id) is not None:
            raise conflict(BUSY)
        attached: list[File] = []
        if file_ids and user_content is not None:
            attached = await files.files_to_attach(
                db, self.chat, conversation.id, conversation.user_id, file_ids
            )
        history = await store.branch(db, parent.id) if parent is not None else []
        shown = [
            m for m in history if m.role in ("user", "assistant", "tool") and not is_memory_step(m)
        ]
        prompt = [history_input(m) for m in shown]
        attachments = [m.attachments for m in shown]
        if user_content is not None:
            prompt.append(ChatMessageIn(role="user", content=user_content))
            attachments.append([files.attachment(f) for f in attached])
        if not prompt or prompt[-1].role != "user":
            raise bad_request("there is no user message to answer", "parent_id")
        # "Remember that …" (the question's own words, before any file is added to it): saved
        # first, so the memory block below already holds it. A temporary chat neither reads
        # nor writes memory (as ChatGPT's): it leaves no trace, in memory either.
        question = prompt[-1].content
        step = (
            await remember(db, conversation.user_id, question)
            if isinstance(question, str) and not conversation.temporary
            else None
        )
        if any(attachments):
            prompt = await self._with_files(db, served, conversation, prompt, attachments)
        # Only a model trained with the tools searches (a query fewer per send for the rest).
        file_search = await self._file_search(db, conversation, attached) if served.tools else None
        # The project's instructions and the conversation's own prompt (custom instructions were
        # copied into it at its creation), then the user's memory as it is now: a deleted fact
        # leaves every later answer.
        remembered = None if conversation.temporary else await memory_for(db, conversation.user_id)
        system = [p for p in (await system_prompt(db, conversation), remembered) if p]
        if system:
            prompt.insert(0, ChatMessageIn(role="system", content="\n\n".join(system)))
        source = await self._source(db, served, conversation, prompt, file_search)
        if step is not None:
            source = step.around(source)
        # The engine starts on the prompt now, while the turn is written (its commit is not in
        # front of the prefill); the answer's first event still comes after the question is
        # stored, and a send that is not stored ends the request.
        pieces = ReadAhead(source.stream())
        try:
            # The request's reads are done: its connection goes back to the pool now rather
            # than being held for the whole stream (the group commit's session writes the turn).
            await db.commit()
            stream_after = await self.chat.events.last_id(stream_key(conversation.id))
            try:
                user_message, answer = await self._store_turn(
                    conversation,
                    parent,
                    user_content,
                    source.model,
                    stream_after,
                    memory_used=remembered is not None,
                    attached=attached,
                )
            except IntegrityError:  # another send won the race (the one-streaming index)
                raise conflict(BUSY) from None
            key = stream_key(conversation.id)
            if user_message is not None:
                await self.chat.events.append(key, "message", message_public(user_message))
            await self.chat.events.append(key, "message", message_public(answer))
        except BaseException:
            await pieces.aclose()
            raise
        gen = Generation(
            conversation.id, conversation.user_id, answer, source, pieces, stream_after
        )
        gen.file_search = file_search
        if not conversation.title:
            asked = [m.content for m in history if m.role == "user"] + [user_content or ""]
            gen.title = title_from(asked[0])
        self.running[conversation.id] = gen
        gen.task = asyncio.create_task(self._run(gen), name=f"generation-{answer.id}")
        return gen

    async def _store_turn(
        self,
        conversation: Conversation,
        parent: Message | None,
        user_content: str | None,
        model: str,
        stream_after: str | None,
        *,
        memory_used: bool,
        attached: list[File],
    ) -> tuple[Message | None, Message]:
        """The question (if new, with its attached files) and the empty answer under it, in
        one transaction with the other sends that come with it."""
        turn = store.NewTurn(
            conversation.id,
            parent.id if parent is not None else None,
            user_content,
            model,
            stream_after,
            self.chat.worker,
            memory_used,
            attachments=[files.attachment(f) for f in attached],
            file_ids=[f.id for f in attached],
        )
        return await self.writes.write(store.add_turns, turn)

    async def _source(
        self,
        db: AsyncSession,
        served: ServedModel,
        conversation: Conversation,
        prompt: list[ChatMessageIn],
        file_search: FileSearch | None = None,
    ) -> AnswerSource:
        """The served model, or a connected endpoint's when the conversation names one
        (`CONNECTION/MODEL`)."""
        cap = conversation.max_tokens or self.chat.settings.app_max_tokens
        model = conversation.model
        if model is None or model == served.name:
            tools = self._tools(file_search) if served.tools else None
            salt = cache_salt(user_cache_identity(conversation.user_id), None)
            return await local_source(
                served, self.api.metrics, prompt, conversation.temperature, cap, tools, salt
            )
        name, _, remote_model = model.partition("/")
        connection = await connection_named(db, self.chat, name) if remote_model else None
        if connection is None:
            raise bad_request(
                f"this conversation asks for the model {model!r}, which is neither served "
                f"here ({served.name!r}) nor on a connection; change the conversation's model",
                "model",
            )
        key = None
        if connection.api_key_encrypted is not None:
            key = self.chat.secrets.open(connection.api_key_encrypted)
        body: dict[str, Any] = {
            "messages": [m.model_dump(exclude_none=True) for m in prompt],
            "max_tokens": cap,
        }
        if conversation.temperature is not None:
            body["temperature"] = conversation.temperature
        return RemoteSource(connection.name, connection.base_url, key, remote_model, body)

    def _tools(self, file_search: FileSearch | None) -> list[Tool]:
        """The built-in tools, for a model trained with them, as `fireside chat` has them:
        search reads the data directory's knowledge index (built on its first use), after
        the chat's files when it has some (the same name and place in the list)."""
        tools = builtin_tools()
        if file_search is None:
            return tools
        return [file_search.tool() if t.name == "search" else t for t in tools]

    async def _file_search(
        self, db: AsyncSession, conversation: Conversation, attached: list[File]
    ) -> FileSearch | None:
        """The answer's search over the chat's files, its project's, and those the question
        attaches (not linked yet); None when there are none."""
        searchable = await file_store.conversation_file_ids(db, conversation)
        searchable += [f.id for f in attached if f.id not in searchable]
        if not searchable:
            return None
        loop = asyncio.get_running_loop()
        return FileSearch(self.chat, conversation.user_id, searchable, loop)

    async def _with_files(
        self,
        db: AsyncSession,
        served: ServedModel,
        conversation: Conversation,
        prompt: list[ChatMessageIn],
        attachments: list[list[dict[str, Any]] | None],
    ) -> list[ChatMessageIn]:
        """Small attached files whole in the prompt: a quarter of the served model's context
        in its own tokens (a connected model's: by characters)."""
        if conversation.model is None or conversation.model == served.name:
            tokenizer = served.tokenizer
            budget = served.engine.context_length // 4
            return await render_attachments(
                db, prompt, attachments, budget, lambda text: len(tokenizer.encode(text))
            )
        return await render_attachments(db, prompt, attachments, REMOTE_BUDGET_CHARS, len)

    # --- stopping ---

    def stop_local(self, conversation_id: str) -> None:
        """The broker's handler: stops the generation if it runs in this process."""
        try:
            gen = self.running.get(uuid.UUID(conversation_id))
        except ValueError:
            return
        if gen is not None and gen.task is not None and not gen.task.done():
            gen.stopping = True
            gen.end.set()

    async def stop(self, db: AsyncSession, conversation_id: uuid.UUID) -> bool:
        """Asks whichever process runs this conversation's generation to stop it."""
        if await store.streaming_message(db, conversation_id) is None:
            return False
        await self.chat.broker.publish_stop(str(conversation_id))
        return True

    async def shutdown(self) -> None:
        """Server going down: running answers end as `interrupted`, their text kept."""
        tasks = [g.task for g in self.running.values() if g.task is not None]
        for gen in self.running.values():
            gen.end.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the task ---

    async def _run(self, gen: Generation) -> None:
        answer = _Answer(gen.message.id)
        status, error = "complete", None
        reader = asyncio.create_task(self._read(gen, answer), name=f"answer-{gen.message.id}")
        ended = asyncio.ensure_future(gen.end.wait())
        try:
            # One race per answer, not per token: an end cancels the reader only while it waits
            # for the next piece (a piece not yet sent is dropped, so the stored text is the
            # streamed text); otherwise the reader sees `end` after the write it is doing.
            await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done() and answer.waiting:
                reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                if not gen.end.is_set():
                    raise  # this task itself is cancelled, not the reader by an end
            if gen.end.is_set() and not answer.finished:
                status = "stopped" if gen.stopping else "interrupted"
                with contextlib.suppress(Exception):
                    await gen.source.abort()
        except asyncio.CancelledError:
            reader.cancel()
            status = "interrupted"
        except APIError as e:
            # A model worker lost mid-answer (a gateway's): the text so far is kept, as when
            # this process stops; the error says why it ended there.
            status = "interrupted" if e.code == "worker_lost" else "error"
            error = e.message
        except Exception as e:
            log.exception("generation %s failed", answer.message_id)
            status, error = "error", f"the generation failed: {type(e).__name__}"
        finally:
            ended.cancel()
        if answer.saving is not None:
            await asyncio.wait({answer.saving})  # its own errors are logged where it runs
        try:
            await self._finish(gen, answer.text, status, error, answer.usage)
        finally:
            self.running.pop(gen.conversation_id, None)

    async def _read(self, gen: Generation, answer: _Answer) -> None:
        """The answer's pieces into the event log (and the database once a second) until the
        source ends (`answer.finished`) or `gen.end` is set."""
        key = stream_key(gen.conversation_id)
        tool_turn = ToolTurn(self.chat, gen)
        async with contextlib.aclosing(gen.pieces) as pieces:
            while not gen.end.is_set():
                answer.waiting = True
                try:
                    piece = await anext(pieces)
                except StopAsyncIteration:
                    answer.finished = True
                    return
                finally:
                    answer.waiting = False
                if gen.end.is_set():
                    return
                if piece.usage is not None:
                    answer.usage = piece.usage
                if piece.tool is not None:  # a call, a result, or the next message
                    answer.text = await tool_turn.apply(piece.tool, answer.text)
                    if gen.message.id != answer.message_id:
                        answer.message_id, answer.flushed_at = gen.message.id, -FLUSH_EVERY_S
                    continue
                # As it will be stored, so the deltas put together are the stored answer.
                piece_text = storable(piece.text)
                if not piece_text:
                    continue
                answer.text += piece_text
                # Queued, not awaited: the log coalesces an answer's deltas until its next
                # flush, and its `done` goes after them (fireside/store/coalescing.py).
                self.chat.events.send_delta(key, str(answer.message_id), piece_text)
                # Sent first (a commit is not in front of the first token), then saved: the
                # first text at once, then once a second, each save beside the stream rather
                # than in its way (a save can wait behind other answers' writes; saves that
                # come together share a transaction). A save that lands late changes nothing:
                # it only writes a message still `streaming`.
                if time.monotonic() - answer.flushed_at >= FLUSH_EVERY_S and (
                    answer.saving is None or answer.saving.done()
                ):
                    answer.saving = asyncio.create_task(
                        self._save_partial(answer.message_id, answer.text)
                    )
                    answer.flushed_at = time.monotonic()

    async def _save_partial(self, message_id: uuid.UUID, text: str) -> None:
        try:
            await self.writes.write(store.save_partials, (message_id, text))
        except Exception:  # the final write still comes; a missed flush only risks a crash
            log.warning("could not save the partial answer of %s", message_id, exc_info=True)

    async def _finish(
        self,
        gen: Generation,
        text: str,
        status: str,
        error: str | None,
        usage: tuple[int, int] | None,
    ) -> None:
        key = stream_key(gen.conversation_id)
        message = gen.message
        message.content, message.status, message.error = text, status, error
        message.updated_at = now()
        used = None
        if usage is not None and message.model is not None:
            used = Usage(
                user_id=gen.user_id,
                model=message.model,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
            )
        # A title the user gave meanwhile stays (the update sets one only where none is).
        finished = store.FinishedAnswer(
            message.id, gen.conversation_id, text, status, error, gen.title, used
        )
        await self.writes.write(store.finish_answers, finished)
        if error is not None:
            await self.chat.events.append(
                key, "error", {"message_id": str(message.id), "error": error}
            )
        await self.chat.events.append(key, "done", {"message": message_public(message)})


async def interrupt_orphans(chat: ChatState) -> int:
    """Start-up: generations left `streaming` by a process that is no longer running."""
    async with chat.db.session() as db:
        workers = await store.streaming_workers(db)
        alive = await chat.broker.alive(workers)
        count = await store.interrupt_orphans(db, alive)
        await db.commit()
    if count:
        log.warning("marked %d unfinished answer(s) interrupted", count)
    return count
