"""Brute-force limits on the account routes: failed password checks per account and per
client address, sign-ups per client address; a 429 with Retry-After past them.

Failures alone are counted against logins, so people who type their password right are never
slowed down; once an account has used up its failures, even the right password waits out the
window (else guessing would go on until it hit). The per-account count is keyed by the email
as typed, known or not, so the limit says nothing about which emails have accounts. The
client address is the connection's (uvicorn takes X-Forwarded-For from trusted proxies only).
"""

from __future__ import annotations

import hashlib

from starlette.requests import HTTPConnection

from fireside.api.errors import APIError
from fireside.settings import Settings
from fireside.store.ratelimit import RateLimiter


def redis_prefix(database_url: str) -> str:
    """Servers sharing one Redis but not one database keep their counts apart."""
    return f"fireside:auth:{hashlib.sha256(database_url.encode()).hexdigest()[:12]}:"


def too_many(retry_after: float, what: str) -> APIError:
    return APIError(
        f"too many {what}; try again in {max(1, round(retry_after))} seconds",
        429,
        type="rate_limit_error",
        code="rate_limited",
        retry_after=retry_after,
    )


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client is not None else "unknown"


class AuthLimits:
    def __init__(self, limiter: RateLimiter, settings: Settings) -> None:
        self.limiter = limiter
        self.window = settings.auth_window_s
        self.per_account = settings.auth_failures_per_account
        self.per_address = settings.auth_failures_per_address
        self.signups = settings.signups_per_address

    async def before_password_check(self, email: str, address: str) -> None:
        """429 while the account or the address has used up its failures."""
        for key, limit in self._failure_keys(email, address):
            if (wait := await self.limiter.peek(key, limit)) is not None:
                raise too_many(wait, "failed password attempts")

    async def failed_password_check(self, email: str, address: str) -> None:
        for key, limit in self._failure_keys(email, address):
            await self.limiter.hit(key, limit, self.window)

    async def signup(self, address: str) -> None:
        if wait := await self.limiter.hit(f"signup:{address}", self.signups, self.window):
            raise too_many(wait, "sign-ups from this address")

    def _failure_keys(self, email: str, address: str) -> list[tuple[str, int]]:
        return [
            (f"fail:account:{email.strip().lower()}", self.per_account),
            (f"fail:address:{address}", self.per_address),
        ]
