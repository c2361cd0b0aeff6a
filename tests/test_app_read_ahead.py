"""ReadAhead (fireside/app/sources.py): a send's source is started before its turn is stored,
so the engine's prefill runs beside the commit; the reader then gets every piece once, in
order, and a send that is not stored closes the source (which is what ends its engine
request)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from fireside.app.sources import Piece, ReadAhead


class Source:
    """An answer source whose pieces wait for `go` (the engine's prefill); it notes when it
    was asked for its first piece and when it was closed."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.go = asyncio.Event()
        self.started = self.closed = False

    async def stream(self) -> AsyncGenerator[Piece, None]:
        self.started = True
        try:
            await self.go.wait()
            for text in self.texts:
                yield Piece(text)
        finally:
            self.closed = True


def test_the_source_starts_at_once_and_the_reader_gets_every_piece_once() -> None:
    async def scenario() -> None:
        source = Source(["a", "b", "c"])
        pieces = ReadAhead(source.stream())
        await asyncio.sleep(0)  # the turn being written: nobody reads yet
        assert source.started  # ...but the source already began (the prefill)
        source.go.set()
        await asyncio.sleep(0.01)
        assert [p.text async for p in pieces] == ["a", "b", "c"]
        await pieces.aclose()
        assert source.closed

    asyncio.run(scenario())


@pytest.mark.parametrize("first_ready", [False, True])
def test_a_send_that_is_not_stored_closes_its_source(first_ready: bool) -> None:
    async def scenario() -> None:
        source = Source(["a", "b"])
        pieces = ReadAhead(source.stream())
        if first_ready:
            source.go.set()
        await asyncio.sleep(0.01)
        assert source.started and not source.closed
        await pieces.aclose()  # the insert lost the race: 409
        assert source.closed

    asyncio.run(scenario())


def test_an_error_of_the_source_reaches_the_reader() -> None:
    async def failing() -> AsyncGenerator[Piece, None]:
        raise RuntimeError("queue full")
        yield Piece()  # an async generator

    async def scenario() -> None:
        pieces = ReadAhead(failing())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="queue full"):
            await anext(pieces)
        await pieces.aclose()

    asyncio.run(scenario())
