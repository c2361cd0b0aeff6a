"""Alembic's entry: runs on the connection `fireside.store.db` hands it (async engines run
Alembic through `run_sync`), under the lock that connection holds."""

from __future__ import annotations

from alembic import context

from fireside.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through fireside.store.db.Database.migrate")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
