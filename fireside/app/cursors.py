"""Keyset page cursors: an opaque token for (a row's time, its id), where the next page starts."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from fireside.api.errors import bad_request


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, _, id_ = base64.urlsafe_b64decode(padded.encode("ascii")).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(id_)
    except (ValueError, UnicodeError, binascii.Error):
        raise bad_request("the cursor is not one this server gave", "cursor") from None
