"""temporary conversations (kept out of lists, search, exports; swept after a day); presets

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, never batch mode (as 0007 does): no table is copied.
    op.add_column(
        "conversations",
        sa.Column("temporary", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_conversations_temporary_created", "conversations", ["temporary", "created_at"]
    )
    op.create_table(
        "presets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_presets_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presets")),
    )
    op.create_index("ix_presets_user_id", "presets", ["user_id"])
    op.create_index("ix_presets_shared", "presets", ["shared"])


def downgrade() -> None:
    op.drop_index("ix_presets_shared", table_name="presets")
    op.drop_index("ix_presets_user_id", table_name="presets")
    op.drop_table("presets")
    op.drop_index("ix_conversations_temporary_created", table_name="conversations")
    op.drop_column("conversations", "temporary")  # SQLite 3.35+ drops a column in place
