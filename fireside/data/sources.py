"""`fireside data sources`: text and code that the installed packages carry, with licences.

Nothing is downloaded. Each recipe walks a place on this machine and writes JSON Lines
(`text`, `source`, `licence`, `path`) that `fireside data prepare` reads; the licence of each
document travels into the prepared data's manifest.
"""

from __future__ import annotations

import gzip
import json
import re
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from fireside.errors import DataError

MAX_FILE_BYTES = 2_000_000  # larger files are generated tables and data, not prose or code


@dataclass(frozen=True)
class Found:
    path: Path
    text: str
    licence: str


@dataclass(frozen=True)
class Recipe:
    name: str
    licence: str  # what the recipe's texts are under, in general; each document records its own
    description: str
    available: Callable[[], bool]
    walk: Callable[[], Iterator[Found]]


def _read(path: Path, gz: bool = False) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


# -- Python: the standard library and installed distributions -------------------------------


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _walk_stdlib() -> Iterator[Found]:
    root = _stdlib()
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        if (text := _read(path)) is not None:
            yield Found(path, text, "PSF-2.0")


def distribution_licence(dist: metadata.Distribution) -> str:
    """SPDX expression where the metadata has one, else the classifier, else its License field."""
    meta = dist.metadata
    if expr := meta["License-Expression"]:
        return str(expr)
    classifiers = [
        c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")
    ]
    if classifiers:
        return "; ".join(classifiers)
    short = (meta["License"] or "").strip()
    return short if short and len(short) < 80 and "\n" not in short else "UNKNOWN"


def _walk_packages() -> Iterator[Found]:
    seen: set[Path] = set()
    for dist in sorted(metadata.distributions(), key=lambda d: str(d.metadata["Name"]).lower()):
        licence = distribution_licence(dist)
        for file in sorted(dist.files or [], key=str):
            if file.suffix != ".py":
                continue
            path = Path(str(file.locate())).resolve()
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            if (text := _read(path)) is not None:
                yield Found(path, text, licence)


# -- Debian: documentation, man pages, word lists ------------------------------------------

DOC_ROOT = Path("/usr/share/doc")
MAN_ROOT = Path("/usr/share/man")
DICT_ROOT = Path("/usr/share/dict")
DOC_NAMES = re.compile(r"(README|NEWS|FAQ|INTRO|TODO|HOWTO|USAGE|\.txt|\.md|\.rst)", re.I)
LICENSE_LINE = re.compile(r"^License:\s*(\S.*)$", re.M)


def debian_licence(package: str) -> str:
    """The first `License:` of a package's machine-readable copyright file."""
    copyright_file = DOC_ROOT / package / "copyright"
    text = _read(copyright_file) if copyright_file.is_file() else None
    match = LICENSE_LINE.search(text or "")
    return (
        f"Debian:{package}:{match.group(1).strip()}" if match else f"Debian:{package}:see copyright"
    )


def _walk_debian_docs() -> Iterator[Found]:
    for pkg_dir in sorted(p for p in DOC_ROOT.iterdir() if p.is_dir()):
        licence = debian_licence(pkg_dir.name)
        for path in sorted(pkg_dir.rglob("*")):
            name = path.name.removesuffix(".gz")
            if not path.is_file() or "changelog" in name or name == "copyright":
                continue
            if DOC_NAMES.search(name) and (text := _read(path, gz=path.suffix == ".gz")):
                yield Found(path, text, licence)


ROFF_FONT = re.compile(r"\\f[BIRP1-4]|\\f\(..|\\f\[[^\]]*\]")
ROFF_ESCAPES = {
    "\\-": "-",
    "\\(em": "—",
    "\\(en": "–",
    "\\&": "",
    "\\e": "\\",
    "\\ ": " ",
    "\\(aq": "'",
    "\\(dq": '"',
}


def roff_to_text(source: str) -> str:
    """Readable text from a man page's roff source: requests dropped, section titles kept."""
    lines: list[str] = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith((".", "'")):
            request, _, rest = line[1:].partition(" ")
            if request in ("SH", "SS"):
                lines.extend(["", rest.strip('"').upper() if request == "SH" else rest.strip('"')])
            elif request in ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "TP", "IP") and rest:
                lines.append(rest.replace('"', ""))
            elif request in ("PP", "LP", "P", "sp", "br"):
                lines.append("")
            continue
        lines.append(line)
    text = ROFF_FONT.sub("", "\n".join(lines))
    for escape, char in ROFF_ESCAPES.items():
        text = text.replace(escape, char)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _walk_man_pages() -> Iterator[Found]:
    # English pages only: the section directories directly under /usr/share/man.
    for section in sorted(MAN_ROOT.glob("man[1-9]")):
        for path in sorted(section.iterdir()):
            source = _read(path, gz=path.suffix == ".gz")
            if source and not source.startswith(".so "):  # .so pages only point elsewhere
                yield Found(
                    path, roff_to_text(source), "per package (see /usr/share/doc/*/copyright)"
                )


def _walk_dictionaries() -> Iterator[Found]:
    for path in sorted(DICT_ROOT.iterdir()):
        if path.is_file() and (text := _read(path)):
            yield Found(path, text, "Debian word list (see /usr/share/doc/w*/copyright)")


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "python-stdlib",
            "PSF-2.0",
            "the Python standard library's source",
            lambda: _stdlib().is_dir(),
            _walk_stdlib,
        ),
        Recipe(
            "python-packages",
            "per distribution",
            "source of installed Python distributions",
            lambda: True,
            _walk_packages,
        ),
        Recipe(
            "debian-docs",
            "per package",
            "READMEs, FAQs and guides in /usr/share/doc",
            DOC_ROOT.is_dir,
            _walk_debian_docs,
        ),
        Recipe(
            "man-pages",
            "per package",
            "English man pages, roff rendered to text",
            lambda: any(MAN_ROOT.glob("man[1-9]")),
            _walk_man_pages,
        ),
        Recipe(
            "dictionary",
            "per word list",
            "word lists in /usr/share/dict",
            DICT_ROOT.is_dir,
            _walk_dictionaries,
        ),
    ]
}


def gather(
    output: str | Path, names: Sequence[str] | None = None, max_files: int | None = None
) -> dict[str, Any]:
    """Run recipes into `output/<recipe>.jsonl` and write `output/sources.json` (counts and
    licences per recipe). Unknown recipe names raise; unavailable ones are reported and skipped."""
    unknown = sorted(set(names or []) - set(RECIPES))
    if unknown:
        raise DataError(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for name in names or list(RECIPES):
        recipe = RECIPES[name]
        if not recipe.available():
            summary[name] = {"available": False, "description": recipe.description}
            continue
        licences: Counter[str] = Counter()
        documents = n_bytes = 0
        tmp = output / f".{name}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for found in recipe.walk():
                if not found.text.strip():
                    continue
                record = {
                    "text": found.text,
                    "source": name,
                    "licence": found.licence,
                    "path": str(found.path),
                }
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                licences[found.licence] += 1
                documents += 1
                n_bytes += len(found.text.encode())
                if max_files is not None and documents >= max_files:
                    break
        tmp.replace(output / f"{name}.jsonl")
        summary[name] = {
            "available": True,
            "description": recipe.description,
            "documents": documents,
            "bytes": n_bytes,
            "licences": dict(licences.most_common()),
        }
    (output / "sources.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
