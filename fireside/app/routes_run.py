"""Running the code of an answer: Python in the sandbox, HTML as a framed preview
(fireside/app/runs.py does the work)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fireside.api.errors import ErrorResponse
from fireside.app.deps import ChatStateDep, CurrentUser
from fireside.app.errors import not_found
from fireside.app.runs import check_preview_id
from fireside.app.schemas import PreviewCreate, PreviewCreated, RunRequest, RunResult

router = APIRouter(tags=["run"])

RUN_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "The code (or HTML) is too long"},
    429: {"model": ErrorResponse, "description": "Too many runs; see Retry-After"},
    503: {"model": ErrorResponse, "description": "No sandbox can be made on this server"},
}
PREVIEW_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "The HTML, under a policy of its own", "content": {"text/html": {}}},
}


@router.post("/run", response_model=RunResult, responses=RUN_RESPONSES)
async def run(body: RunRequest, user: CurrentUser, state: ChatStateDep) -> RunResult:
    """Run a Python program in the sandbox (the python tool's limits); its output, exit
    status and the files it wrote in its working directory."""
    return await state.runs.run_python(user.id, body.code)


@router.post("/previews", response_model=PreviewCreated, status_code=201, responses=RUN_RESPONSES)
async def create_preview(
    body: PreviewCreate, user: CurrentUser, state: ChatStateDep
) -> PreviewCreated:
    preview_id = await state.runs.store_preview(user.id, body.html)
    return PreviewCreated(id=preview_id, url=f"/api/previews/{preview_id}")


@router.get("/previews/{preview_id}", response_class=HTMLResponse, responses=PREVIEW_DOC)
async def preview(preview_id: str, user: CurrentUser, state: ChatStateDep) -> HTMLResponse:
    """The owner's preview, framed by the page; its sandboxing policy is set by
    fireside/api/headers.py for every answer under /api/previews/."""
    check_preview_id(preview_id)
    html = await state.runs.previews.get(user.id, preview_id)
    if html is None:
        raise not_found("preview")
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
