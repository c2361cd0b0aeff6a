"""SQLAlchemy's error text (and so the server's tracebacks) carried a failing statement's
parameters: a conversation's title appeared in the log. Engines hide them now; on both
backends a failing statement's exception text has no parameter value."""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from fireside.store.db import Database
from fireside.store.models import Conversation
from tests.app_utils import Backend, chat_settings

SECRET_TITLE = "Divorce lawyer questions 7f3b"


def test_a_failing_statements_text_has_no_parameters(
    chat_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail() -> str:
        db = Database(chat_settings(chat_backend).resolved_database_url())
        try:
            await db.migrate()
            async with db.session() as s:
                # No such user: the foreign key refuses the row.
                s.add(Conversation(user_id=uuid.uuid4(), title=SECRET_TITLE))
                with pytest.raises(IntegrityError) as caught:
                    await s.commit()
                logging.getLogger("fireside.test").error("failed", exc_info=caught.value)
                return "".join(traceback.format_exception(caught.value))
        finally:
            await db.close()

    with caplog.at_level(logging.INFO):  # (aiosqlite logs every call at DEBUG)
        text = asyncio.run(fail())
    assert "INSERT INTO conversations" in text  # the statement itself is still told
    assert SECRET_TITLE not in text
    assert SECRET_TITLE not in caplog.text
    assert "hide_parameters=True" in text
