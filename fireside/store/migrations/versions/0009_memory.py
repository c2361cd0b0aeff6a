"""Custom instructions and memory: the user's about-me and response style, memory facts,
and the answers that used them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs, never batch mode: copying `messages` would drop its FTS5 triggers
    # (0002), and there is no need to copy `users` either.
    op.add_column("users", sa.Column("about_me", sa.Text(), nullable=True))
    op.add_column("users", sa.Column("response_style", sa.Text(), nullable=True))
    op.add_column(
        "users",
        sa.Column("memory_enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column(
        "messages",
        sa.Column("memory_used", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "memory_facts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_memory_facts_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_facts")),
    )
    op.create_index("ix_memory_facts_user_id", "memory_facts", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_memory_facts_user_id", table_name="memory_facts")
    op.drop_table("memory_facts")
    # SQLite 3.35+ drops a column in place.
    op.drop_column("messages", "memory_used")
    op.drop_column("users", "memory_enabled")
    op.drop_column("users", "response_style")
    op.drop_column("users", "about_me")
