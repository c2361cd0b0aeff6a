"""Custom instructions and memory: the user's about-me and response style, memory facts,
and the answers that used them

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("about_me", sa.Text(), nullable=True))
        batch.add_column(sa.Column("response_style", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column(
                "memory_enabled", sa.Boolean(), nullable=False, server_default=sa.text("true")
            )
        )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("memory_used", sa.Boolean(), nullable=False, server_default=sa.text("false"))
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
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("memory_used")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("memory_enabled")
        batch.drop_column("response_style")
        batch.drop_column("about_me")
