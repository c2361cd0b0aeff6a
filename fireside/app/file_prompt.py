"""Small attached files go into the prompt whole: a user message with attachments is shown
to the model as the files' text, each in a `<file name="…">` block, before the question.

The files of one answer's prompt share a budget (a quarter of the context, counted with the
model's tokenizer; newest messages first): a file past it is named in an empty block, to be
found through the `search` tool. Special-token texts inside a file (`<|end|>`, `<|system|>`)
stay text: the tokenizer encodes every message's special-token texts as plain text.
"""

from __future__ import annotations

import asyncio
import html
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.schemas import ChatMessageIn
from fireside.store import files as store

TOO_LONG = "(too long to show here whole: use the search tool to read it)"
REMOTE_BUDGET_CHARS = 32_000  # a connected model's context is unknown: about 8k tokens
CountTokens = Callable[[str], int]


def file_block(name: str, text: str | None) -> str:
    body = TOO_LONG if text is None else text
    return f'<file name="{html.escape(name, quote=True)}">\n{body}\n</file>'


def with_files(content: str, files: Sequence[tuple[str, str | None]]) -> str:
    """The question as the model reads it: the files' blocks, then the question."""
    return "\n\n".join([*(file_block(n, t) for n, t in files), content])


async def render_attachments(
    db: AsyncSession,
    prompt: list[ChatMessageIn],
    attachments: Sequence[Sequence[dict[str, object]] | None],
    budget: int,
    count: CountTokens,
) -> list[ChatMessageIn]:
    """`prompt` with each user message's attached files (attachments[i] for prompt[i]) put in
    front of its text, within `budget` tokens for all files, newest message first."""
    ids = [uuid.UUID(str(a["id"])) for files in attachments for a in files or []]
    texts = await store.file_texts(db, list(dict.fromkeys(ids)))
    out = list(prompt)
    left = budget
    for i in reversed(range(len(prompt))):
        files = attachments[i]
        if not files or prompt[i].role != "user":
            continue
        shown: list[tuple[str, str | None]] = []
        for a in files:
            text = texts.get(uuid.UUID(str(a["id"])))
            if text is None:
                continue  # deleted since: the model no longer sees it
            cost = await asyncio.to_thread(count, text)  # a long text's tokens take a while
            if cost > left:
                shown.append((str(a["name"]), None))  # searchable only
                continue
            left -= cost
            shown.append((str(a["name"]), text))
        question = prompt[i].content
        content = question if isinstance(question, str) else ""
        out[i] = prompt[i].model_copy(update={"content": with_files(content, shown)})
    return out
