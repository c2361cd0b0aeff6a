"""What goes into the knowledge index, read from what the machine holds.

Each extractor yields `Entry`s with a stable id (`man:tar.1`, `py:json.dumps`,
`dict:wn:lexicon`, `file:/abs/path#3`) and a `summary`: the one to three sentences that
`search` shows. The training-data synthesizer reads the same extractors, so a question's
right answer is, by construction, what the index returns for it.
"""

from __future__ import annotations

import ast
import gzip
import importlib
import inspect
import os
import re
import stat
import sys
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fireside.data.sources import roff_to_text

MAN_ROOT = Path("/usr/share/man")
DICTD_ROOT = Path("/usr/share/dictd")
WORDNET_ROOTS = (Path("/usr/share/wordnet"), Path("/usr/share/wordnet/dict"))
SUMMARY_CHARS = 300
TEXT_CHARS = 4000  # of an entry's body indexed for search
CHUNK_CHARS = 1500  # user files are indexed in chunks about this long
MAX_FILE_BYTES = 4 << 20
USER_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".rst")

# Modules whose names are not the ones people use, and packages of tests and demos.
STDLIB_ALIASES = {"posixpath": "os.path"}
STDLIB_SKIP = re.compile(
    r"^(test|tests|idlelib|turtledemo|lib2to3|ensurepip|pydoc_data|site-packages|dist-packages|"
    r"__pycache__|this|antigravity|__phello__)$"
)


@dataclass(frozen=True)
class Entry:
    id: str  # stable across builds: what a synthesized question refers to
    title: str  # `tar(1)`, `json.dumps`, `lexicon`, `notes.md`
    source: str  # where it was read: a path or a module
    summary: str  # the snippet search returns
    text: str  # the body the index searches (summary included)
    names: tuple[str, ...] = ()  # exact names that rank it first (`tar`, `json.dumps`)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(`'\"])")


def summarize(text: str, limit: int = SUMMARY_CHARS, sentences: int = 3) -> str:
    """The first one to three sentences of `text`, on one line, at most `limit` characters."""
    flat = " ".join(text.split())
    out = ""
    for i, sentence in enumerate(_SENTENCE_END.split(flat)):
        if i >= sentences or (out and len(out) + 1 + len(sentence) > limit):
            break
        out = f"{out} {sentence}" if out else sentence
    if len(out) > limit:
        out = out[: limit - 1].rsplit(" ", 1)[0] + "…"
    return out


# -- man pages --------------------------------------------------------------------------------

_SECTION = re.compile(r'^\.S[Hh]\s+"?([^"\n]*)"?\s*$', re.M)
_LEFTOVER_ESCAPE = re.compile(r"\\(\*\(..|\*\[[^\]]*\]|\(..|\[[^\]]*\]|[a-zA-Z]|.)")
_MDOC = re.compile(r"^\.(Nm|Nd)[ \t]*(.*)$", re.M)


def _sections(source: str) -> dict[str, str]:
    parts = _SECTION.split(source)
    return {parts[i].strip().upper(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _roff(text: str, page: str) -> str:
    # mdoc pages spell the NAME line as `.Nm tar` `.Nd an archiving utility`; a bare `.Nm`
    # later on is the page's own name.
    def mdoc(m: re.Match[str]) -> str:
        if m.group(1) == "Nd":
            return f"\\- {m.group(2)}"
        return m.group(2) or page

    text = _MDOC.sub(mdoc, text)
    return _LEFTOVER_ESCAPE.sub("", roff_to_text(text)).strip()


def man_page_entry(path: Path, source: str) -> Entry | None:
    """An entry from one page's roff: the NAME line and the start of DESCRIPTION."""
    stem = path.name.removesuffix(".gz")
    page, _, section = stem.rpartition(".")
    if not page:
        return None
    sections = _sections(source)
    name = " ".join(_roff(sections.get("NAME", ""), page).split())
    if not name:
        return None
    description = _roff(sections.get("DESCRIPTION", ""), page)
    first = summarize(description, SUMMARY_CHARS - len(name), sentences=2)
    summary = f"{name.rstrip('.')}. {first}" if first else name
    named = name.split(" - ", 1)[0] if " - " in name else page
    names = {n.strip().lower() for n in named.split(",") if n.strip()} | {page.lower()}
    return Entry(
        id=f"man:{stem}",
        title=f"{page}({section})",
        source=str(path),
        summary=summary,
        text=f"{name}\n{description[:TEXT_CHARS]}",
        names=tuple(sorted(names)),
    )


def man_pages(root: Path = MAN_ROOT) -> Iterator[Entry]:
    """English man pages (the man[1-9] directories directly under `root`)."""
    for section in sorted(root.glob("man[1-9]")):
        for path in sorted(section.iterdir()):
            try:
                raw = path.read_bytes()
                source = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
            except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
                continue
            if source.startswith(".so "):  # a link to another page
                continue
            if (entry := man_page_entry(path, source)) is not None:
                yield entry


# -- the Python standard library --------------------------------------------------------------


_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain_docstring(doc: str) -> str:
    """reStructuredText markup off: ``obj`` and :func:`x` read as obj and x."""
    return _RST_ROLE.sub(r"\1", doc).replace("``", "")


def _doc_entry(title: str, source: str, doc: str | None, kind: str) -> Entry | None:
    doc = plain_docstring(inspect.cleandoc(doc or ""))
    if not doc:
        return None
    first = doc.split("\n\n", 1)[0]
    summary = summarize(first)
    if len(summary) < 8:
        return None
    return Entry(
        id=f"py:{title}",
        title=title,
        source=source,
        summary=summary,
        text=f"{title} ({kind})\n{doc[:TEXT_CHARS]}",
        names=(title.lower(),),
    )


def python_source_entries(module: str, source: str, origin: str) -> Iterator[Entry]:
    """Module, public class, public function and public method docstrings of one source file."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    if entry := _doc_entry(module, origin, ast.get_docstring(tree), "module"):
        yield entry
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if node.name.startswith("_"):
            continue
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        title = f"{module}.{node.name}"
        if entry := _doc_entry(title, origin, ast.get_docstring(node), kind):
            yield entry
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and not (
                    item.name.startswith("_")
                ):
                    doc = ast.get_docstring(item)
                    if entry := _doc_entry(f"{title}.{item.name}", origin, doc, "method"):
                        yield entry


def _module_name(root: Path, path: Path) -> str | None:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or any(p.startswith("_") or STDLIB_SKIP.match(p) for p in parts):
        return None
    name = ".".join(parts)
    return STDLIB_ALIASES.get(name, name)


def _compiled_module_entries(name: str) -> Iterator[Entry]:
    """Modules written in C (math, itertools…) have no source: their docstrings, by import.
    Only built-in and lib-dynload modules are imported, which run no Python at import."""
    try:
        with warnings.catch_warnings():  # deprecated modules (nis, spwd) still document
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(name)
    except Exception:  # an extension that needs what the machine lacks (e.g. _tkinter)
        return
    title_prefix = "" if name == "builtins" else f"{name}."
    if name != "builtins" and (entry := _doc_entry(name, name, module.__doc__, "module")):
        yield entry
    for attr, value in sorted(vars(module).items()):
        if attr.startswith("_") or not (inspect.isroutine(value) or inspect.isclass(value)):
            continue
        kind = "class" if inspect.isclass(value) else "function"
        if entry := _doc_entry(f"{title_prefix}{attr}", name, value.__doc__, kind):
            yield entry


def python_stdlib(stdlib: Path | None = None) -> Iterator[Entry]:
    """Docstrings of the standard library: `json.dumps`, `os.path.join`, `math.sqrt`, `len`."""
    root = stdlib or Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        name = _module_name(root, path)
        if name is None:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield from python_source_entries(name, source, str(path))
    compiled = set(sys.builtin_module_names)
    dynload = root / "lib-dynload"
    if dynload.is_dir():
        compiled |= {p.name.split(".")[0] for p in dynload.glob("*.so")}
    for name in sorted(compiled):
        if not name.startswith("_") or name == "builtins":
            yield from _compiled_module_entries(name)


# -- dictionaries -----------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_number(text: str) -> int:
    n = 0
    for ch in text:
        n = n * 64 + _B64.index(ch)
    return n


def dictd_entries(index_path: Path) -> Iterator[Entry]:
    """A dictd dictionary: `NAME.index` (word, offset, length in base 64) and `NAME.dict`
    (or `.dict.dz`, which is gzip-compatible) holding the definitions."""
    name = index_path.name.removesuffix(".index")
    candidates = [index_path.with_name(f"{name}.dict"), index_path.with_name(f"{name}.dict.dz")]
    data_path = next((p for p in candidates if p.is_file()), None)
    if data_path is None:
        return
    raw = data_path.read_bytes()
    body = gzip.decompress(raw) if data_path.suffix == ".dz" else raw
    for line in index_path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0].startswith("00-database"):
            continue
        word = fields[0]
        start, length = _dictd_number(fields[1]), _dictd_number(fields[2])
        definition = body[start : start + length].decode("utf-8", errors="replace").strip()
        # The definition usually repeats the headword on its first line.
        lines = definition.splitlines()
        if lines and lines[0].strip().lower() == word.lower():
            definition = "\n".join(lines[1:]).strip()
        if definition:
            yield Entry(
                id=f"dict:{name}:{word}",
                title=word,
                source=str(data_path),
                summary=summarize(definition),
                text=definition[:TEXT_CHARS],
                names=(word.lower(),),
            )


def wordnet_entries(data_path: Path) -> Iterator[Entry]:
    """A WordNet `data.noun|verb|adj|adv` file: each synset's words and gloss."""
    pos = data_path.suffix.lstrip(".")
    for line in data_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or "|" not in line:  # the licence header
            continue
        head, gloss = line.split("|", 1)
        fields = head.split()
        if len(fields) < 5:
            continue
        count = int(fields[3], 16)
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
        gloss = gloss.strip()
        if not words or not gloss:
            continue
        yield Entry(
            id=f"dict:wn:{pos}:{fields[0]}",
            title=words[0],
            source=str(data_path),
            summary=summarize(f"({pos}) {gloss}"),
            text=f"{', '.join(words)}: {gloss}",
            names=tuple(w.lower() for w in words),
        )


def dictionaries(dictd_root: Path = DICTD_ROOT) -> Iterator[Entry]:
    """Dictionaries with definitions (dictd, WordNet). /usr/share/dict word lists hold only
    words, so they are not here."""
    if dictd_root.is_dir():
        for index in sorted(dictd_root.glob("*.index")):
            yield from dictd_entries(index)
    for root in WORDNET_ROOTS:
        for pos in ("noun", "verb", "adj", "adv"):
            if (root / f"data.{pos}").is_file():
                yield from wordnet_entries(root / f"data.{pos}")


# -- a user's own files -----------------------------------------------------------------------

_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """Blank-line paragraphs gathered into chunks of about `size` characters."""
    chunk = ""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if chunk and len(chunk) + len(paragraph) > size:
            yield chunk
            chunk = ""
        chunk = f"{chunk}\n\n{paragraph}" if chunk else paragraph
        while len(chunk) > 2 * size:  # one huge paragraph (PDF text often has no blank lines)
            cut = chunk.rfind(" ", 0, size)
            cut = cut if cut > 0 else size
            yield chunk[:cut]
            chunk = chunk[cut:].lstrip()
    if chunk:
        yield chunk


def file_entries(path: Path) -> Iterator[Entry]:
    """One text or Markdown file (or text extracted from a PDF) in chunks; a chunk's title is
    the file's name and the last Markdown heading before it."""
    try:
        # Not through a symbolic link, and only a regular file (never a FIFO that blocks, or
        # /proc's files): checked on the open file, so a swap after the walk changes nothing.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
                return
            text = f.read(MAX_FILE_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return
    heading = ""
    resolved = path.resolve()
    for i, chunk in enumerate(_chunks(text)):
        headings = _HEADING.findall(chunk)
        title = f"{path.name}: {headings[0] if headings else heading}".rstrip(": ")
        if headings:
            heading = headings[-1]
        body = _HEADING.sub(lambda m: m.group(1) + ".", chunk)
        yield Entry(
            id=f"file:{resolved}#{i}",
            title=title,
            source=str(resolved),
            summary=summarize(body),
            text=body,
        )


def directory_files(
    root: Path, suffixes: Iterable[str] = USER_SUFFIXES, skipped: list[Path] | None = None
) -> Iterator[Entry]:
    """Every regular text file under `root` (Markdown, plain text, reStructuredText).

    Symbolic links (to files or directories) and anything but a regular file are skipped and
    appended to `skipped`: every user's `search` reads the index, and a link could bring in
    /proc/self/environ (the server's secrets) or a file its owner never meant to share."""
    wanted = tuple(suffixes)
    passed = skipped if skipped is not None else []
    for top, dirs, files in os.walk(root):  # never into a linked directory
        here = Path(top)
        dirs.sort()
        for name in [d for d in dirs if (here / d).is_symlink()]:
            dirs.remove(name)
            passed.append(here / name)
        for name in sorted(files):
            path = here / name
            if path.suffix.lower() not in wanted:
                continue
            try:
                regular = stat.S_ISREG(path.lstat().st_mode)
            except OSError:
                regular = False
            if not regular:
                passed.append(path)
                continue
            yield from file_entries(path)
