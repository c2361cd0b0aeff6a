"""/api/auth/providers (how one may log in here) and the OpenID Connect login:
/api/auth/oidc/login sends the browser to the provider, /api/auth/oidc/callback brings it
back logged in, with the same server-side session a password login starts.

When the provider's email belongs to a password account that no identity ever vouched for,
the callback sends the browser to the login page (LINK_PAGE) with the identity in a sealed
cookie instead; POST /api/auth/oidc/link with that account's password links it once."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from fireside.api.errors import APIError
from fireside.app import accounts
from fireside.app.deps import DB, ChatStateDep, check_origin
from fireside.app.limits import client_address
from fireside.app.oidc import (
    LINK_COOKIE,
    STATE_COOKIE,
    STATE_TTL_S,
    LinkNeeded,
    OIDCLogin,
    link_with_password,
    user_for,
)
from fireside.app.routes_auth import RATE_LIMITED, set_session_cookie
from fireside.app.schemas import Strict, UserPublic

router = APIRouter(tags=["auth"])

LOGIN_PATH = "/api/auth/oidc/login"
STATE_COOKIE_PATH = "/api/auth/oidc"  # the cookie goes back to the callback alone
AFTER_LOGIN = "/"
LINK_PAGE = "/login"  # the web UI asks for the account's password there (?link=<email>)


class OIDCProvider(BaseModel):
    name: str  # for the "Sign in with <name>" button
    login_url: str


class Providers(BaseModel):
    password: bool = True
    oidc: OIDCProvider | None = None  # None: OpenID Connect login is not configured


@router.get("/auth/providers", response_model=Providers)
async def providers(state: ChatStateDep) -> Providers:
    """Public: what the login page offers."""
    if state.oidc is None:
        return Providers()
    return Providers(oidc=OIDCProvider(name=state.settings.oidc_name, login_url=LOGIN_PATH))


def oidc_login(state: ChatStateDep) -> OIDCLogin:
    if state.oidc is None:
        raise APIError(
            "OpenID Connect login is not configured on this server",
            404,
            type="not_found_error",
            code="oidc_not_configured",
        )
    return state.oidc


OIDC = Annotated[OIDCLogin, Depends(oidc_login)]
UNREACHABLE: dict[int | str, dict[str, Any]] = {
    502: {"description": "The identity provider cannot be reached"}
}
Param = Annotated[str | None, Query(max_length=4096)]


@router.get(
    "/auth/oidc/login", response_class=RedirectResponse, status_code=302, responses=UNREACHABLE
)
async def oidc_start(request: Request, oidc: OIDC) -> RedirectResponse:
    url, sealed = await oidc.begin(str(request.url_for("oidc_callback")))
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        STATE_COOKIE,
        sealed,
        max_age=STATE_TTL_S,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back, not on sub-requests
        secure=request.url.scheme == "https",
        path=STATE_COOKIE_PATH,
    )
    return response


@router.get(
    "/auth/oidc/callback",
    name="oidc_callback",
    response_class=RedirectResponse,
    status_code=302,
    responses=UNREACHABLE,
)
async def oidc_callback(
    request: Request,
    oidc: OIDC,
    db: DB,
    state: ChatStateDep,
    code: Param = None,
    state_: Annotated[str | None, Query(alias="state", max_length=4096)] = None,
    error: Param = None,
    error_description: Param = None,
) -> RedirectResponse:
    params = {
        k: v
        for k, v in {
            "code": code,
            "state": state_,
            "error": error,
            "error_description": error_description,
        }.items()
        if v is not None
    }
    who = await oidc.finish(params, request.cookies.get(STATE_COOKIE))
    try:
        user = await user_for(db, who, state.settings)
    except LinkNeeded as pending:
        response = RedirectResponse(
            f"{LINK_PAGE}?{urlencode({'link': pending.who.email})}", status_code=302
        )
        response.set_cookie(
            LINK_COOKIE,
            oidc.seal_link(pending.who),
            max_age=STATE_TTL_S,
            httponly=True,
            samesite="strict",  # only the web UI's own request brings it back
            secure=request.url.scheme == "https",
            path=STATE_COOKIE_PATH,
        )
    else:
        response = RedirectResponse(AFTER_LOGIN, status_code=302)
        set_session_cookie(request, response, await accounts.start_session(db, user))
    response.delete_cookie(STATE_COOKIE, path=STATE_COOKIE_PATH)  # one login per start
    return response


class LinkRequest(Strict):
    password: str = Field(max_length=1000)


@router.post("/auth/oidc/link", response_model=UserPublic, responses=RATE_LIMITED)
async def oidc_link(
    body: LinkRequest,
    request: Request,
    response: Response,
    oidc: OIDC,
    db: DB,
    state: ChatStateDep,
) -> UserPublic:
    """Links the identity the callback left waiting to the account with its email, given
    that account's password; every other session and key of the account ends."""
    check_origin(request, state)
    who = oidc.open_link(request.cookies.get(LINK_COOKIE))
    user = await link_with_password(db, who, body.password, state.limits, client_address(request))
    set_session_cookie(request, response, await accounts.start_session(db, user))
    response.delete_cookie(LINK_COOKIE, path=STATE_COOKIE_PATH)
    return UserPublic.model_validate(user)
