"""Text columns that every backend can store: PostgreSQL refuses U+0000 in text (SQLite
takes it), so a NUL from a user, an import or a model would make a save fail there. It is
replaced by U+FFFD, the replacement character, on the way in, on both backends alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NUL = "\x00"
REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """The text as it will be stored (and so as it is streamed, so the two agree)."""
    return text.replace(NUL, REPLACEMENT) if NUL in text else text


class SafeString(TypeDecorator[str]):
    """String(n) without NULs; also applies to values compared with the column."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return storable(value) if isinstance(value, str) else value


class SafeText(TypeDecorator[str]):
    """Text without NULs."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return storable(value) if isinstance(value, str) else value
