"""/api/auth: sign-up, login, logout, the current user, password change; /api/settings."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fireside.api.errors import ErrorResponse
from fireside.app import accounts
from fireside.app.accounts import SIGNUP_PENDING
from fireside.app.deps import DB, SESSION_COOKIE, ChatStateDep, CurrentUser, check_origin
from fireside.app.deps import session_token as cookie_token
from fireside.app.limits import client_address
from fireside.app.memory import MAX_INSTRUCTIONS
from fireside.app.schemas import LoginRequest, PasswordChange, SignupRequest, UserPublic
from fireside.store import accounts as store
from fireside.store.models import User

router = APIRouter(tags=["auth"])


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(accounts.SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorResponse, "description": "Too many attempts; see Retry-After"}
}


class SignupPending(BaseModel):
    """Under the approval policy, the answer to every sign-up but the first account's: the
    same whether or not the email had an account, so it tells nobody who has one."""

    status: Literal["pending"] = "pending"
    message: str = SIGNUP_PENDING


SIGNUP_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": SignupPending, "description": "Under approval: awaiting an administrator"},
    **RATE_LIMITED,
}


@router.post("/auth/signup", response_model=UserPublic, status_code=201, responses=SIGNUP_RESPONSES)
async def signup(
    body: SignupRequest, request: Request, response: Response, db: DB, state: ChatStateDep
) -> UserPublic | JSONResponse:
    """Open sign-up answers 409 to an email that has an account: accepted there, since anyone
    may sign up anyway and learn it so. Under approval every sign-up is answered alike (202)."""
    check_origin(request, state)
    await state.limits.signup(client_address(request))
    policy = await accounts.signup_policy(db, state.settings.default_signup())
    user = await accounts.sign_up(db, body.email, body.password, body.name, policy)
    if user is None or user.status == "pending":  # no session until approved
        return JSONResponse(SignupPending().model_dump(), status_code=202)
    set_session_cookie(request, response, await accounts.start_session(db, user))
    return UserPublic.model_validate(user)


@router.post("/auth/login", response_model=UserPublic, responses=RATE_LIMITED)
async def login(
    body: LoginRequest, request: Request, response: Response, db: DB, state: ChatStateDep
) -> UserPublic:
    check_origin(request, state)
    user, token = await accounts.login(
        db, body.email, body.password, state.limits, client_address(request)
    )
    set_session_cookie(request, response, token)
    return UserPublic.model_validate(user)


class LoggedOut(BaseModel):
    ok: bool = True


@router.post("/auth/logout", response_model=LoggedOut)
async def logout(request: Request, response: Response, user: CurrentUser, db: DB) -> LoggedOut:
    token = cookie_token(request)
    if token is not None:
        await store.delete_session(db, token)  # gone from the table: refused everywhere at once
        await db.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")
    return LoggedOut()


@router.get("/auth/me", response_model=UserPublic)
async def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.post("/auth/password", response_model=LoggedOut, responses=RATE_LIMITED)
async def change_password(
    body: PasswordChange, request: Request, user: CurrentUser, db: DB, state: ChatStateDep
) -> LoggedOut:
    await accounts.change_password(
        db,
        user,
        body.current_password,
        body.new_password,
        cookie_token(request),
        state.limits,
        client_address(request),
    )
    return LoggedOut()


class SettingsPublic(BaseModel):
    training_consent: bool
    about_me: str  # "What should Fireside know about you?"
    response_style: str  # "How should it answer?"
    memory_enabled: bool


class SettingsUpdate(BaseModel):
    training_consent: bool | None = None
    # Copied into each new conversation's system prompt; "" clears.
    about_me: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)
    response_style: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)
    memory_enabled: bool | None = None


def _settings(user: User) -> SettingsPublic:
    return SettingsPublic(
        training_consent=user.training_consent,
        about_me=user.about_me or "",
        response_style=user.response_style or "",
        memory_enabled=user.memory_enabled,
    )


@router.get("/settings", response_model=SettingsPublic, tags=["settings"])
async def get_settings(user: CurrentUser) -> SettingsPublic:
    return _settings(user)


@router.patch("/settings", response_model=SettingsPublic, tags=["settings"])
async def update_settings(body: SettingsUpdate, user: CurrentUser, db: DB) -> SettingsPublic:
    changes = body.model_dump(exclude_none=True)
    if changes:
        for name, value in changes.items():
            setattr(user, name, value)
        db.add(user)
        await db.commit()
    return _settings(user)
