"""OpenID Connect identities and the users they are linked to (SQL)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import OidcIdentity, User


async def user_for_identity(db: AsyncSession, issuer: str, subject: str) -> User | None:
    found: User | None = await db.scalar(
        select(User)
        .join(OidcIdentity, OidcIdentity.user_id == User.id)
        .where(OidcIdentity.issuer == issuer, OidcIdentity.subject == subject)
    )
    return found


async def has_verified_email(db: AsyncSession, user_id: uuid.UUID, email: str) -> bool:
    """Whether an identity linked to the user vouched for `email` (a provider verified it):
    the only way Fireside knows an account's address is its owner's."""
    found = await db.scalar(
        select(OidcIdentity.subject)
        .where(OidcIdentity.user_id == user_id, OidcIdentity.email == email.lower())
        .limit(1)
    )
    return found is not None


async def link_identity(
    db: AsyncSession, issuer: str, subject: str, user_id: uuid.UUID, email: str
) -> None:
    db.add(OidcIdentity(issuer=issuer, subject=subject, user_id=user_id, email=email.lower()))
    await db.flush()
