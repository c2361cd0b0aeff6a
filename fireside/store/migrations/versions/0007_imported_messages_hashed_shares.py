"""imported messages (kept out of training exports); share tokens stored as SHA-256 hashes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import hashlib
import uuid

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _shares_table(key: str) -> list[SchemaItem]:
    """The shares table's columns: keyed by `key` (the new id beside the token's hash, or the
    old plaintext token)."""
    if key == "token":
        head: list[SchemaItem] = [sa.Column("token", sa.String(length=64), nullable=False)]
    else:
        head = [
            sa.Column("id", sa.Uuid(), nullable=False),
            sa.Column("token_hash", sa.String(length=64), nullable=False),
            sa.UniqueConstraint("token_hash", name=op.f("uq_shares_token_hash")),
        ]
    return [
        *head,
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_shares_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_shares_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(key, name=op.f("pk_shares")),
    ]


def _rows() -> list[dict[str, object]]:
    old = sa.table(
        "shares",
        sa.column("token", sa.String()),
        sa.column("conversation_id", sa.Uuid()),
        sa.column("user_id", sa.Uuid()),
        sa.column("title", sa.String()),
        sa.column("messages", sa.JSON()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    return [dict(r._mapping) for r in op.get_bind().execute(sa.select(old))]


def upgrade() -> None:
    # A plain ADD COLUMN, never batch mode: copying `messages` would drop its FTS5 triggers.
    op.add_column(
        "messages",
        sa.Column("imported", sa.Boolean(), nullable=False, server_default=sa.false()),
    )

    # The table is made again (its key changes): rows are read, it is dropped (its constraint
    # names are reused), and they come back keyed by id with only the token's hash.
    rows = _rows()
    op.drop_table("shares")
    shares = op.create_table("shares", *_shares_table("id"))
    op.create_index("ix_shares_user_id", "shares", ["user_id"])
    if rows:
        for row in rows:
            token = str(row.pop("token"))
            row["id"] = uuid.uuid4()
            row["token_hash"] = hashlib.sha256(token.encode()).hexdigest()
        op.bulk_insert(shares, rows)


def downgrade() -> None:
    # Hashed tokens cannot be turned back into links: the shares are dropped.
    op.drop_index("ix_shares_user_id", table_name="shares")
    op.drop_table("shares")
    op.create_table("shares", *_shares_table("token"))
    op.drop_column("messages", "imported")  # SQLite 3.35+ drops a column in place
