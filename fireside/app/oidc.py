"""Login with OpenID Connect, through Authlib: the authorization-code flow with state, nonce
and PKCE, the ID token checked against the provider's keys, and the person it names found,
linked or created.

Nothing of a login in progress is kept on the server: its state, nonce and PKCE verifier
travel in a short-lived cookie sealed with the server's secret (Fernet), so any process can
finish a login that another one started.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.starlette_client import OAuth
from joserfc.errors import JoseError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import APIError
from fireside.app import accounts
from fireside.app.errors import forbidden
from fireside.app.limits import AuthLimits
from fireside.app.sealing import InvalidToken, sealer
from fireside.settings import Settings
from fireside.store import accounts as users
from fireside.store import identities
from fireside.store.models import User

log = logging.getLogger(__name__)

STATE_COOKIE = "fireside_oidc"
STATE_TTL_S = 600  # a login not finished in ten minutes starts again
LINK_COOKIE = "fireside_oidc_link"  # an identity waiting for its account's password
HTTP_TIMEOUT_S = 10.0


def login_error(message: str, status: int = 400) -> APIError:
    return APIError(message, status, type="authentication_error", code="oidc_login_failed")


def provider_unreachable(e: Exception) -> APIError:
    return APIError(
        f"the identity provider could not be reached: {type(e).__name__}: {e}",
        502,
        type="service_unavailable",
        code="oidc_provider_unreachable",
    )


@dataclass(frozen=True)
class Identity:
    """What the provider vouches for about the person logging in."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str


class OIDCLogin:
    """The configured provider. Its discovery document and keys are fetched on first use
    (and cached by Authlib), so the server starts even while the provider is down."""

    def __init__(self, settings: Settings) -> None:
        assert settings.oidc_configured()
        secret = settings.oidc_client_secret
        self.client: Any = OAuth().register(
            "oidc",
            client_id=settings.oidc_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            server_metadata_url=settings.oidc_discovery_url,
            client_kwargs={
                "scope": settings.oidc_scope,
                "code_challenge_method": "S256",
                "timeout": HTTP_TIMEOUT_S,
            },
        )
        self.sealer = sealer(settings.resolved_secret_key(), "oidc-login-state")
        self.link_sealer = sealer(settings.resolved_secret_key(), "oidc-pending-link")

    def seal_link(self, who: Identity) -> str:
        """The identity, for the browser to bring back with the account's password."""
        return self.link_sealer.encrypt(json.dumps(asdict(who)).encode()).decode()

    def open_link(self, cookie: str | None) -> Identity:
        if not cookie:
            raise login_error(
                "no login with the identity provider is waiting to be linked (or it expired); "
                "log in with the provider again"
            )
        try:
            who = Identity(**json.loads(self.link_sealer.decrypt(cookie.encode(), STATE_TTL_S)))
        except (InvalidToken, ValueError, TypeError):
            raise login_error("the link expired or was tampered with; log in again") from None
        return who

    async def begin(self, redirect_uri: str) -> tuple[str, str]:
        """The provider's authorization URL to send the browser to, and the sealed cookie
        that the callback checks it against."""
        try:
            started = await self.client.create_authorization_url(redirect_uri)
        except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as e:
            raise provider_unreachable(e) from None
        kept = {k: started[k] for k in ("state", "nonce", "code_verifier")}
        kept["redirect_uri"] = redirect_uri
        return started["url"], self.sealer.encrypt(json.dumps(kept).encode()).decode()

    async def finish(self, params: Mapping[str, str], cookie: str | None) -> Identity:
        """Checks the callback against the cookie, exchanges the code and validates the ID
        token; every failure is a 4xx (or 502 when the provider cannot be reached)."""
        if "error" in params:
            detail = params.get("error_description") or params["error"]
            raise login_error(f"the identity provider refused the login: {detail}")
        kept = self._open(cookie)
        state = params.get("state") or ""
        if not hmac.compare_digest(state.encode(), str(kept.get("state", "")).encode()):
            raise login_error(
                "the login's state does not match the one this browser started; "
                "start the login again"
            )
        code = params.get("code")
        if not code:
            raise login_error("the identity provider sent no authorization code")
        try:
            token = await self.client.fetch_access_token(
                redirect_uri=kept["redirect_uri"],
                code=code,
                code_verifier=kept["code_verifier"],
            )
            claims = await self.client.parse_id_token(token, nonce=kept["nonce"])
            if claims is None:
                raise login_error("the identity provider sent no ID token")
            profile = dict(claims)
            if "email" not in profile:
                # In the code flow a conformant provider may keep the profile for userinfo.
                info = await self.client.userinfo(token=token)
                if info.get("sub") != claims["sub"]:
                    raise login_error("the provider's userinfo is about someone else")
                profile.update(
                    {k: info[k] for k in ("email", "email_verified", "name") if k in info}
                )
        except httpx.HTTPError as e:
            raise provider_unreachable(e) from None
        except (AuthlibBaseError, JoseError) as e:
            raise login_error(f"the identity provider's answer was refused: {e}") from None
        email = profile.get("email")
        return Identity(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            email=str(email) if email else None,
            # Some providers send "true" as a string; anything else is not verified.
            email_verified=profile.get("email_verified") in (True, "true"),
            name=str(profile.get("name") or (str(email).split("@")[0] if email else "")),
        )

    def _open(self, cookie: str | None) -> dict[str, Any]:
        if not cookie:
            raise login_error(
                "no login was started in this browser (or it expired); start the login again"
            )
        try:
            kept: dict[str, Any] = json.loads(self.sealer.decrypt(cookie.encode(), STATE_TTL_S))
        except (InvalidToken, ValueError):
            raise login_error("the login expired or was tampered with; start it again") from None
        return kept


class LinkNeeded(Exception):
    """The identity's verified email belongs to an account whose email Fireside never
    verified (a password sign-up): whoever made it may not own the address, so the identity
    is linked only once someone proves they own that account, with its password."""

    def __init__(self, who: Identity) -> None:
        super().__init__(who.email)
        self.who = who


async def user_for(db: AsyncSession, who: Identity, settings: Settings) -> User:
    """The user this identity logs in as: the one it is linked to; else the account with the
    same email, which the provider must have verified (an unverified address would let anyone
    who types another's email at the provider take over their account) and Fireside too (an
    identity of that account's vouched for it), else LinkNeeded; else a new account, under the
    sign-up policy. The identity is linked on the way."""
    user = await identities.user_for_identity(db, who.issuer, who.subject)
    if user is None:
        if not who.email:
            raise login_error("the identity provider shared no email address", 403)
        if not who.email_verified:
            raise login_error(
                f"the identity provider has not verified the email {who.email}; verify it "
                "there, then log in again",
                403,
            )
        user = await users.user_by_email(db, who.email)
        if user is None:
            name = who.name[:200] or who.email
            policy = await accounts.signup_policy(db, settings.default_signup())
            user = await accounts.create_user(db, who.email, None, name, policy)
        elif not await identities.has_verified_email(db, user.id, who.email):
            # A password sign-up under this email may be a squatter's, waiting for its owner.
            raise LinkNeeded(who)
        user = await _link(db, who, user)
    _check_status(user)
    return user


async def link_with_password(
    db: AsyncSession, who: Identity, password: str, limits: AuthLimits, address: str
) -> User:
    """Links a pending identity to the account with its email once that account's password
    is given, then ends every other session and key of the account: whatever a squatter (or a
    thief of the password) held, the account's owner now holds alone."""
    assert who.email is not None
    await limits.before_password_check(who.email, address)
    user = await users.user_by_email(db, who.email)
    if user is None or not await accounts.verify_password(user.password_hash, password):
        await limits.failed_password_check(who.email, address)
        raise forbidden(f"that is not the password of the account {who.email}")
    _check_status(user)
    await users.delete_sessions_except(db, user.id, None)
    await users.delete_api_keys(db, user.id)
    return await _link(db, who, user)


async def _link(db: AsyncSession, who: Identity, user: User) -> User:
    assert who.email is not None
    try:
        await identities.link_identity(db, who.issuer, who.subject, user.id, who.email)
        await db.commit()
        log.info("linked %s at %s to user %s", who.subject, who.issuer, user.id)
    except IntegrityError:  # the same first login finishing twice at once: it linked
        await db.rollback()
        linked = await identities.user_for_identity(db, who.issuer, who.subject)
        if linked is None:
            raise login_error("the login raced another; log in again", 409) from None
        return linked
    return user


def _check_status(user: User) -> None:
    if user.status == "pending":
        raise forbidden("this account awaits an administrator's approval")
    if user.status != "active":
        raise forbidden("this account is disabled")
