"""files in chats: files (bytes on disk by sha256), their passages (full-text indexed), which
message attached which file; messages' attachments and search sources

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# As 0002 does for messages. SQLite: an external-content FTS5 table over file_passages'
# implicit rowid, kept current by triggers; PostgreSQL: a GIN index on the 'simple' vector.
SQLITE_UP = [
    "CREATE VIRTUAL TABLE file_passages_fts USING fts5("
    "text, content='file_passages', content_rowid='rowid', tokenize='unicode61')",
    "CREATE TRIGGER file_passages_fts_insert AFTER INSERT ON file_passages BEGIN "
    "INSERT INTO file_passages_fts(rowid, text) VALUES (new.rowid, new.text); END",
    "CREATE TRIGGER file_passages_fts_delete AFTER DELETE ON file_passages BEGIN "
    "INSERT INTO file_passages_fts(file_passages_fts, rowid, text) "
    "VALUES ('delete', old.rowid, old.text); END",
    "CREATE TRIGGER file_passages_fts_update AFTER UPDATE OF text ON file_passages BEGIN "
    "INSERT INTO file_passages_fts(file_passages_fts, rowid, text) "
    "VALUES ('delete', old.rowid, old.text); "
    "INSERT INTO file_passages_fts(rowid, text) VALUES (new.rowid, new.text); END",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS file_passages_fts_update",
    "DROP TRIGGER IF EXISTS file_passages_fts_delete",
    "DROP TRIGGER IF EXISTS file_passages_fts_insert",
    "DROP TABLE IF EXISTS file_passages_fts",
]
POSTGRES_UP = [
    "CREATE INDEX ix_file_passages_fts ON file_passages USING gin (to_tsvector('simple', text))"
]
POSTGRES_DOWN = ["DROP INDEX IF EXISTS ix_file_passages_fts"]


def _run(sqlite: list[str], postgres: list[str]) -> None:
    name = op.get_bind().dialect.name
    for statement in sqlite if name == "sqlite" else postgres if name == "postgresql" else []:
        op.execute(statement)


def upgrade() -> None:
    # Plain ADD COLUMNs, never batch mode: copying `messages` would drop its FTS5 triggers.
    op.add_column("messages", sa.Column("attachments", sa.JSON(), nullable=True))
    op.add_column("messages", sa.Column("sources", sa.JSON(), nullable=True))
    op.create_table(
        "files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=True),
        sa.Column("conversation_id", sa.Uuid(), nullable=True),
        sa.Column("text_chars", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_files_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    op.create_index("ix_files_user_created", "files", ["user_id", "created_at", "id"])
    op.create_index("ix_files_conversation_id", "files", ["conversation_id"])
    op.create_index("ix_files_project_id", "files", ["project_id"])
    op.create_index("ix_files_sha256", "files", ["sha256"])
    op.create_table(
        "file_passages",
        sa.Column("file_id", sa.Uuid(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["files.id"],
            name=op.f("fk_file_passages_file_id_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "n", name=op.f("pk_file_passages")),
    )
    op.create_table(
        "message_files",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("file_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_files_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["files.id"],
            name=op.f("fk_message_files_file_id_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "file_id", name=op.f("pk_message_files")),
    )
    op.create_index("ix_message_files_file_id", "message_files", ["file_id"])
    _run(SQLITE_UP, POSTGRES_UP)


def downgrade() -> None:
    _run(SQLITE_DOWN, POSTGRES_DOWN)
    op.drop_index("ix_message_files_file_id", table_name="message_files")
    op.drop_table("message_files")
    op.drop_table("file_passages")
    op.drop_index("ix_files_sha256", table_name="files")
    op.drop_index("ix_files_project_id", table_name="files")
    op.drop_index("ix_files_conversation_id", table_name="files")
    op.drop_index("ix_files_user_created", table_name="files")
    op.drop_table("files")
    op.drop_column("messages", "sources")  # SQLite 3.35+ drops a column in place
    op.drop_column("messages", "attachments")
