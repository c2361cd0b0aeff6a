"""Users, their sessions and personal API keys: the SQL behind accounts."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import ApiKey, AppSetting, Session, User, now


def token_hash(token: str) -> str:
    """Tokens are 256 random bits: a plain SHA-256 is enough (no salt, no stretching)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def count_users(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(User)) or 0)


async def user_by_email(db: AsyncSession, email: str) -> User | None:
    found: User | None = await db.scalar(select(User).where(User.email == email.lower()))
    return found


async def add_user(
    db: AsyncSession, email: str, name: str, password_hash: str | None, role: str, status: str
) -> User:
    user = User(
        email=email.lower(), name=name, password_hash=password_hash, role=role, status=status
    )
    db.add(user)
    await db.flush()
    return user


FIRST_ADMIN_KEY = "first_admin"


async def claim_first_admin(db: AsyncSession, user_id: uuid.UUID) -> None:
    """Inserts the one row that says the first account (the bootstrap admin) exists: a
    primary key, so of concurrent claims one commits and the others fail (IntegrityError)."""
    db.add(AppSetting(key=FIRST_ADMIN_KEY, value=str(user_id)))
    await db.flush()


async def add_session(db: AsyncSession, user_id: uuid.UUID, token: str, ttl: timedelta) -> None:
    db.add(Session(token_hash=token_hash(token), user_id=user_id, expires_at=now() + ttl))
    await db.flush()


async def user_for_session(db: AsyncSession, token: str) -> User | None:
    """The active user a live session token belongs to; checked on every request, so a
    revoked session (a deleted row) stops working at once on every process."""
    row = (
        await db.execute(
            select(User, Session.expires_at)
            .join(Session, Session.user_id == User.id)
            .where(Session.token_hash == token_hash(token))
        )
    ).first()
    if row is None:
        return None
    user, expires = row
    if _aware(expires) <= now() or user.status != "active":
        return None
    found: User = user
    return found


async def delete_session(db: AsyncSession, token: str) -> None:
    await db.execute(delete(Session).where(Session.token_hash == token_hash(token)))


async def delete_sessions_except(db: AsyncSession, user_id: uuid.UUID, keep: str | None) -> None:
    query = delete(Session).where(Session.user_id == user_id)
    if keep is not None:
        query = query.where(Session.token_hash != token_hash(keep))
    await db.execute(query)


async def add_api_key(
    db: AsyncSession,
    user_id: uuid.UUID,
    name: str,
    secret: str,
    prefix: str,
    expires_at: datetime | None = None,
) -> ApiKey:
    key = ApiKey(
        user_id=user_id,
        name=name,
        prefix=prefix,
        key_hash=token_hash(secret),
        expires_at=expires_at,
    )
    db.add(key)
    await db.flush()
    return key


async def api_keys_of(db: AsyncSession, user_id: uuid.UUID) -> list[ApiKey]:
    rows = await db.scalars(
        select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())
    )
    return list(rows)


async def delete_api_key(db: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    result = await db.execute(delete(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))


async def delete_api_keys(db: AsyncSession, user_id: uuid.UUID) -> None:
    await db.execute(delete(ApiKey).where(ApiKey.user_id == user_id))


async def user_for_api_key(db: AsyncSession, secret: str) -> User | None:
    """The active user a live (unexpired) personal key belongs to."""
    row = (
        await db.execute(
            select(User, ApiKey.id, ApiKey.expires_at)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == token_hash(secret))
        )
    ).first()
    if row is None or row[0].status != "active":
        return None
    if row[2] is not None and _aware(row[2]) <= now():
        return None
    await db.execute(update(ApiKey).where(ApiKey.id == row[1]).values(last_used_at=now()))
    found: User = row[0]
    return found


def _aware(t: datetime) -> datetime:
    from datetime import UTC

    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
