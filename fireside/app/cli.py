"""`fireside admin ...`: headless administration against the configured database."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fireside.errors import FiresideError
from fireside.settings import Settings

if TYPE_CHECKING:
    from fireside.app.export import ExportFormat


def add_admin_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser(
        "admin", help="administer the chat app: accounts, feedback, model versions"
    )
    commands = admin.add_subparsers(dest="admin_command", required=True)
    create = commands.add_parser("create-user", help="create an account (no sign-up needed)")
    create.add_argument("email")
    create.add_argument("--name", help="display name (default: the email's local part)")
    create.add_argument("--admin", action="store_true", help="make it an administrator")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (default: ask on the terminal)",
    )
    create.set_defaults(func=_create_user)
    export = commands.add_parser(
        "export-feedback", help="write consented feedback as DPO or SFT JSONL for `fireside train`"
    )
    export.add_argument("--format", choices=["dpo", "sft"], required=True)
    export.add_argument("--output", required=True, help="the JSONL file to write")
    export.set_defaults(func=_export_feedback)
    migrate = commands.add_parser(
        "migrate",
        help="bring the database to the newest schema, then exit (a deploy's migration step; "
        "`fireside serve` also migrates at start-up)",
    )
    migrate.set_defaults(func=_migrate)
    from fireside.app.improve_cli import add_improve_parsers

    add_improve_parsers(commands)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise FiresideError("the passwords differ")
    return first


def _create_user(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fireside.app.schemas import SignupRequest

    password = _read_password(args.password_stdin)
    name = args.name or args.email.partition("@")[0]
    try:
        body = SignupRequest(email=args.email, password=password, name=name)
    except ValidationError as e:
        problems = "; ".join(f"{err['loc'][0]}: {err['msg']}" for err in e.errors())
        raise FiresideError(f"invalid account: {problems}") from None
    user = asyncio.run(_create(Settings(), body, args.admin))
    print(f"created {user} ({'admin' if args.admin else 'user'})")
    return 0


async def _create(settings: Settings, body: object, admin: bool) -> str:
    from fireside.api.errors import APIError
    from fireside.app.accounts import create_user
    from fireside.app.schemas import SignupRequest
    from fireside.store.db import Database

    assert isinstance(body, SignupRequest)
    db = Database(settings.resolved_database_url())
    try:
        await db.migrate()
        async with db.session() as session:
            try:
                user = await create_user(
                    session, body.email, body.password, body.name, "open", admin=admin
                )
            except APIError as e:
                raise FiresideError(e.message) from None
            return user.email
    finally:
        await db.close()


def _migrate(args: argparse.Namespace) -> int:
    revision = asyncio.run(_migrate_database(Settings()))
    print(f"database at schema revision {revision}")
    return 0


async def _migrate_database(settings: Settings) -> str:
    from sqlalchemy import text

    from fireside.store.db import Database

    db = Database(settings.resolved_database_url())
    try:
        await db.migrate()  # under the lock: a migration Job and starting gateways migrate once
        async with db.session() as session:
            return str(
                (
                    await session.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one()
            )
    finally:
        await db.close()


def _export_feedback(args: argparse.Namespace) -> int:
    count = asyncio.run(_export(Settings(), args.format, Path(args.output)))
    print(f"wrote {count} {args.format} example(s) to {args.output}")
    return 0


async def _export(settings: Settings, fmt: ExportFormat, output: Path) -> int:
    from fireside.app.export import export_lines
    from fireside.store.db import Database

    db = Database(settings.resolved_database_url())
    try:
        await db.migrate()
        async with db.session() as session:
            lines = list(await export_lines(session, fmt))
    finally:
        await db.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(output)  # a training run never reads half a file
    return len(lines)
