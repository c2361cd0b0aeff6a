"""Temporary chats: the page deletes one when the user leaves it; this sweep deletes those it
never could (a closed laptop, a crash) a day after they began, at start-up and every
`SWEEP_EVERY_S` after."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fireside.app import files
from fireside.app.state import ChatState
from fireside.store import conversations as store
from fireside.store.models import now

log = logging.getLogger(__name__)

TEMPORARY_FOR = timedelta(hours=24)
SWEEP_EVERY_S = 600.0


async def sweep_temporary(chat: ChatState) -> int:
    """Deletes every temporary conversation older than TEMPORARY_FOR; how many it deleted."""
    async with chat.db.session() as db:
        ids = await store.delete_temporary_before(db, now() - TEMPORARY_FOR)
        digests = await files.delete_with(db, ids)  # the files uploaded for them
        await db.commit()
    await files.forget(chat, digests)
    for conversation_id in ids:
        # An answer still running in one stops, rather than write into a deleted tree.
        await chat.broker.publish_stop(str(conversation_id))
    if ids:
        log.info("deleted %d temporary conversations older than a day", len(ids))
    return len(ids)


async def sweep_forever(chat: ChatState) -> None:
    while True:
        try:
            await sweep_temporary(chat)
        except Exception:  # a busy or unreachable database: try again next round
            log.exception("the sweep of temporary conversations failed")
        await asyncio.sleep(SWEEP_EVERY_S)
