"""Sign-up, login, logout, password change: the rules of accounts (routes stay thin)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import APIError
from fireside.app.errors import conflict, forbidden, unauthorized
from fireside.app.limits import AuthLimits
from fireside.settings import SignupPolicy
from fireside.store import accounts, admin
from fireside.store.models import User

SESSION_TTL = timedelta(days=30)
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


async def create_user(
    db: AsyncSession,
    email: str,
    password: str | None,
    name: str,
    policy: SignupPolicy,
    admin: bool = False,
) -> User:
    """The first account is the admin and active whatever the policy; after it, `policy`
    decides: open (active), approval (pending until an admin approves), closed (refused).
    No password: an account that logs in through OpenID Connect only.

    "First" is claimed, not counted: the first account's transaction also inserts the one
    `first_admin` row of app_settings, whose primary key lets one claim commit on either
    backend; a concurrent sign-up that lost it is retried as an ordinary one."""
    hashed = await hash_password(password) if password is not None else None
    first = await accounts.count_users(db) == 0
    try:
        return await _insert_user(db, email, hashed, name, policy, admin, first)
    except IntegrityError:
        await db.rollback()
        if not first or await accounts.user_by_email(db, email) is not None:
            raise conflict("an account with this email exists") from None
    # Another sign-up claimed the first account while this one counted none.
    try:
        return await _insert_user(db, email, hashed, name, policy, admin, first=False)
    except IntegrityError:  # the same email signing up twice at once
        await db.rollback()
        raise conflict("an account with this email exists") from None


SIGNUP_PENDING = (
    "if this email is new here, its account now awaits an administrator's approval; "
    "log in once it is approved"
)


async def sign_up(
    db: AsyncSession, email: str, password: str, name: str, policy: SignupPolicy
) -> User | None:
    """A sign-up from the web: create_user, except that under approval an email that has an
    account is no error (None), so that the answer cannot tell it from a new one. Either way
    the password was hashed (create_user hashes first), so the time tells nothing either."""
    try:
        return await create_user(db, email, password, name, policy)
    except APIError as e:
        if policy == "approval" and e.status == 409:
            return None
        raise


async def _insert_user(
    db: AsyncSession,
    email: str,
    hashed: str | None,
    name: str,
    policy: SignupPolicy,
    admin: bool,
    first: bool,
) -> User:
    if not first and not admin and policy == "closed":
        raise forbidden("sign-up is closed on this server; ask an administrator")
    if await accounts.user_by_email(db, email) is not None:
        raise conflict("an account with this email exists")
    role = "admin" if first or admin else "user"
    status = "pending" if policy == "approval" and not (first or admin) else "active"
    user = await accounts.add_user(db, email, name, hashed, role, status)
    if first:
        await accounts.claim_first_admin(db, user.id)
    await db.commit()
    return user


async def start_session(db: AsyncSession, user: User) -> str:
    token = secrets.token_urlsafe(32)
    await accounts.add_session(db, user.id, token, SESSION_TTL)
    await db.commit()
    return token


async def login(
    db: AsyncSession, email: str, password: str, limits: AuthLimits, address: str
) -> tuple[User, str]:
    await limits.before_password_check(email, address)
    user = await accounts.user_by_email(db, email)
    ok = await verify_password(user.password_hash if user else None, password)
    if user is None or not ok:
        await limits.failed_password_check(email, address)
        raise unauthorized("wrong email or password")
    if user.status == "pending":
        raise forbidden("this account awaits an administrator's approval")
    if user.status != "active":
        raise forbidden("this account is disabled")
    return user, await start_session(db, user)


async def change_password(
    db: AsyncSession,
    user: User,
    current: str,
    new: str,
    keep_session: str | None,
    limits: AuthLimits,
    address: str,
) -> None:
    # A stolen session must not be a way to guess the password: the account's count is shared
    # with the login's.
    await limits.before_password_check(user.email, address)
    if not await verify_password(user.password_hash, current):
        await limits.failed_password_check(user.email, address)
        raise forbidden("the current password is wrong")
    user.password_hash = await hash_password(new)
    # Whoever else was logged in with the old password is logged out, and the keys made
    # with it are revoked: a password changed after a leak must leave nothing of the leak.
    await accounts.delete_sessions_except(db, user.id, keep_session)
    await accounts.delete_api_keys(db, user.id)
    await db.commit()


async def signup_policy(db: AsyncSession, default: SignupPolicy) -> SignupPolicy:
    """The admin's choice once made (PATCH /api/admin/settings), else FIRESIDE_SIGNUP."""
    stored = await admin.setting(db, "signup")
    return cast(SignupPolicy, stored) if stored in ("open", "closed", "approval") else default
