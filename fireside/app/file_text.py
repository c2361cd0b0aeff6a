"""A file's text, by its kind, cut into passages for the search tool.

Plain text and source code are read as UTF-8; PDFs with pypdf (page by page, so a passage
knows its page); Word documents with python-docx. What cannot be read is a FileRefused
with the HTTP status and a message that says why: 415 for a kind not read here, 400 for a
file that does not read as its kind (not UTF-8, a corrupt PDF, a PDF without a text layer).
Extraction is CPU work on untrusted bytes: callers run it in a worker thread.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import PurePath

log = logging.getLogger(__name__)

PASSAGE_CHARS = 1000  # about a paragraph or two: a search hit the model can read whole

TEXT_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/x-rst",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".html": "text/html",
    ".htm": "text/html",
    ".xml": "application/xml",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".ini": "text/plain",
    ".cfg": "text/plain",
    ".log": "text/plain",
    ".tex": "text/x-tex",
}
# Source code: served and indexed as plain text.
CODE_EXTENSIONS = frozenset(
    f".{ext}"
    for ext in [
        "py",
        "pyi",
        "js",
        "mjs",
        "cjs",
        "ts",
        "tsx",
        "jsx",
        "svelte",
        "vue",
        "css",
        "scss",
        "java",
        "kt",
        "scala",
        "c",
        "h",
        "cc",
        "cpp",
        "hpp",
        "cs",
        "go",
        "rs",
        "rb",
        "php",
        "swift",
        "m",
        "r",
        "jl",
        "lua",
        "pl",
        "sh",
        "bash",
        "zsh",
        "ps1",
        "sql",
        "hs",
        "ml",
        "ex",
        "exs",
        "erl",
        "clj",
        "dart",
        "zig",
        "nim",
        "f90",
        "proto",
        "graphql",
        "dockerfile",
        "makefile",
    ]
)
PDF, DOCX = ".pdf", ".docx"
PDF_TYPE = "application/pdf"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ALLOWED = "text (.txt .md .rst), source code, .csv .json .html, .pdf and .docx"


class FileRefused(Exception):
    """The file cannot be taken; `status` is the HTTP answer (413, 415 or 400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Passage:
    text: str
    page: int | None  # the PDF page it starts on (1-based); None for other kinds


def extension(name: str) -> str:
    suffix = PurePath(name).suffix.lower()
    stem = PurePath(name).name.lower()
    return f".{stem}" if not suffix and stem in ("dockerfile", "makefile") else suffix


def content_type(name: str) -> str:
    """The type this server gives a file by its name (never the type the client claims):
    what `GET /api/files/{id}/content` answers with. Raises FileRefused (415) for kinds that
    are not read here."""
    ext = extension(name)
    if ext in TEXT_TYPES:
        return TEXT_TYPES[ext]
    if ext in CODE_EXTENSIONS:
        return "text/plain"
    if ext == PDF:
        return PDF_TYPE
    if ext == DOCX:
        return DOCX_TYPE
    raise FileRefused(
        415, f"files of this kind ({ext or 'no extension'}) are not read; upload {ALLOWED}"
    )


def extract(name: str, data: bytes) -> list[Passage]:
    """The file's text as passages, in order. Raises FileRefused."""
    ext = extension(name)
    content_type(name)  # 415 first
    if ext == PDF:
        pages = _pdf_pages(data)
    elif ext == DOCX:
        pages = [(None, _docx_text(data))]
    else:
        pages = [(None, _utf8(data))]
    passages = [p for page, text in pages for p in cut(text, page)]
    if not passages:
        raise FileRefused(400, "the file holds no text")
    return passages


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FileRefused(
            400, f"the file is not UTF-8 text (byte {e.start} does not decode); save it as UTF-8"
        ) from None


def _pdf_pages(data: bytes) -> list[tuple[int | None, str]]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise FileRefused(400, "the PDF is encrypted; upload it without a password")
        pages: list[tuple[int | None, str]] = [
            (i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)
        ]
    except FileRefused:
        raise
    except Exception as e:  # pypdf raises many kinds on broken files; all mean the same here
        log.info("unreadable PDF: %s: %s", type(e).__name__, e)
        raise FileRefused(400, "the PDF could not be read (it is damaged or not a PDF)") from None
    if not any(text.strip() for _, text in pages):
        raise FileRefused(
            400,
            "the PDF has no text layer (a scan or images only); run it through OCR, or "
            "upload its text",
        )
    return pages


def _docx_text(data: bytes) -> str:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as e:  # a bad zip, a missing part: the file is not a Word document
        log.info("unreadable DOCX: %s: %s", type(e).__name__, e)
        raise FileRefused(
            400, "the Word document could not be read (it is damaged or not a .docx)"
        ) from None
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:  # tables' cells, a row a line
        for row in table.rows:
            lines.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(lines)


_BLANK_LINES = re.compile(r"\n\s*\n")


def cut(text: str, page: int | None = None, size: int = PASSAGE_CHARS) -> list[Passage]:
    """Passages of at most about `size` characters, cut where a paragraph ends if one does
    within them, else where a line ends, else (one long line) at a space or anywhere."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[Passage] = []
    rest = text.strip()
    while rest:
        if len(rest) <= size:
            out.append(Passage(rest, page))
            break
        window = rest[: size + 1]
        at = max((m.start() for m in _BLANK_LINES.finditer(window)), default=-1)
        if at < size // 3:
            at = window.rfind("\n")
        if at < size // 3:
            at = window.rfind(" ")
        if at < size // 3:
            at = size
        piece = rest[:at].strip()
        if piece:
            out.append(Passage(piece, page))
        rest = rest[at:].strip()
    return out
