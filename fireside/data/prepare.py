"""`fireside data prepare`: raw files -> clean, deduplicated, shuffled token shards + manifest.

Inputs are files, directories (walked recursively) or globs of plain text and source code,
JSON Lines (a `text` field per line) and Parquet (a `text` column). A text or code file longer
than `max_document_chars` (32,000) is split into documents of at most that size, at blank
lines where it has them, so one large file (a novel, nanoGPT's Shakespeare) is many documents
and a slice of them is held out for validation like any other. JSONL and Parquet records are
taken as they are. The output directory is
built under a temporary name and renamed when complete, so a DATA_DIR is never half written.
"""

from __future__ import annotations

import glob
import hashlib
import json
import random
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fireside.data.shards import MANIFEST, ShardWriter, token_dtype, tokenizer_hash
from fireside.errors import DataError
from fireside.files import swap_dir
from fireside.model.tokenizer import Tokenizer

TEXT_SUFFIXES = frozenset(
    [
        ".txt",
        ".md",
        ".rst",
        ".tex",
        ".org",
        ".adoc",
        ".html",
        ".htm",
        ".xml",
        ".csv",
        ".tsv",
        ".json",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".py",
        ".pyi",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cxx",
        ".rs",
        ".go",
        ".java",
        ".kt",
        ".scala",
        ".js",
        ".mjs",
        ".ts",
        ".tsx",
        ".jsx",
        ".rb",
        ".php",
        ".pl",
        ".pm",
        ".lua",
        ".sh",
        ".bash",
        ".zsh",
        ".sql",
        ".r",
        ".jl",
        ".swift",
        ".m",
        ".cs",
        ".fs",
        ".hs",
        ".ml",
        ".ex",
        ".exs",
        ".erl",
        ".clj",
        ".el",
        ".vim",
        ".cmake",
        ".mk",
        ".proto",
        ".css",
        ".scss",
        ".dart",
        ".zig",
        ".nim",
    ]
)
DATA_SUFFIXES = frozenset({".jsonl", ".parquet"})
ENCODE_CHUNK = 512  # documents per encode_batch call: big enough for the Rust thread pool
MAX_DOCUMENT_CHARS = 32_000  # a longer text file is split (about 8k tokens of English)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass
class Document:
    text: str
    source: str
    licence: str | None = None


@dataclass
class SourceStats:
    documents: int = 0
    duplicates: int = 0
    tokens: int = 0
    bytes: int = 0
    licences: set[str] = field(default_factory=set)


def expand_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, str, bool]]:
    """(file, source name, named explicitly) for each input file, in a stable order.

    A directory or glob contributes the files whose suffix Fireside reads; a file named
    explicitly is read whatever its suffix, and must be readable."""
    if not inputs:
        raise DataError("no --input given: name files, directories or globs to read")
    found: list[tuple[Path, str, bool]] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_file():
            found.append((path, path.name, True))
        elif path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES | DATA_SUFFIXES
            )
            if not files:
                raise DataError(
                    f"input directory {text!r} holds no text, code, .jsonl or .parquet file"
                )
            found.extend((p, path.name or text, False) for p in files)
        elif any(ch in text for ch in "*?["):
            files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not files:
                raise DataError(f"input glob {text!r} matches no file")
            found.extend((p, text, False) for p in files)
        else:
            raise DataError(f"input {text!r} does not exist")
    return found


def clean(text: str) -> str:
    """NFC-normalise, unify line endings, drop control characters other than tab and newline,
    and trim blank lines at the ends (indentation is kept: it is code's syntax)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "".join(
        ch for ch in text if ch in "\t\n" or unicodedata.category(ch) not in ("Cc", "Cs")
    )
    return text.strip("\n").rstrip()


def _read_jsonl(path: Path, source: str) -> Iterator[Document]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{path}:{lineno}: expected an object with a string 'text' field")
            licence = record.get("licence") or record.get("license")
            yield Document(record["text"], str(record.get("source") or source), licence)


def _read_parquet(path: Path, source: str) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    if "text" not in parquet.schema_arrow.names:
        raise DataError(
            f"{path}: no 'text' column (columns: {', '.join(parquet.schema_arrow.names)})"
        )
    for batch in parquet.iter_batches(columns=["text"]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str):
                yield Document(value, source)


def split_text(text: str, max_chars: int = MAX_DOCUMENT_CHARS) -> list[str]:
    """`text` in consecutive pieces of at most `max_chars`, each cut at the last blank line
    before the limit, else the last line end, else at the limit. The pieces join back to it."""
    if max_chars < 1:
        raise DataError(f"--max-document-chars must be at least 1, got {max_chars}")
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        limit = start + max_chars
        blank = [m.end() for m in _BLANK_LINE.finditer(text, start, limit)]
        cut = blank[-1] if blank and blank[-1] > start else text.rfind("\n", start, limit) + 1
        if cut <= start:
            cut = limit
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def read_documents(
    path: Path, source: str, max_document_chars: int = MAX_DOCUMENT_CHARS
) -> Iterator[Document]:
    """The documents in one file. Unreadable or non-UTF-8 files raise DataError."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _read_jsonl(path, source)
        elif suffix == ".parquet":
            yield from _read_parquet(path, source)
        else:
            for piece in split_text(path.read_text(encoding="utf-8"), max_document_chars):
                yield Document(piece, source)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None


def _place_output(staging: Path, output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise DataError(f"output {str(output)!r} exists; pass --overwrite to replace it")
    swap_dir(staging, output, output.with_name(f".{output.name}.old"))


def prepare(
    inputs: Sequence[str | Path],
    tokenizer: Tokenizer,
    output: str | Path,
    *,
    val_fraction: float = 0.005,
    seed: int = 0,
    shard_tokens: int = 100_000_000,
    overwrite: bool = False,
    progress: bool = True,
    max_document_chars: int = MAX_DOCUMENT_CHARS,
) -> dict[str, Any]:
    """Build DATA_DIR from `inputs`; returns the manifest (also written to DATA_DIR)."""
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    output = Path(output)
    if output.exists() and not overwrite:
        raise DataError(f"output {str(output)!r} exists; pass --overwrite to replace it")
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if bos is None:
        raise DataError("the tokenizer has no bos_token or eos_token to separate documents")
    files = expand_inputs(inputs)

    stats: dict[str, SourceStats] = {}
    seen: set[bytes] = set()
    docs: list[Document] = []
    skipped: list[str] = []
    for path, source, explicit in tqdm(files, desc="read", unit="file", disable=not progress):
        try:
            found = list(read_documents(path, source, max_document_chars))
        except DataError as e:
            # A named file must be readable; a binary file met while walking a tree is skipped.
            if explicit or path.suffix.lower() in DATA_SUFFIXES:
                raise
            skipped.append(str(e))
            continue
        for doc in found:
            text = clean(doc.text)
            if not text:
                continue
            s = stats.setdefault(doc.source, SourceStats())
            if doc.licence:
                s.licences.add(doc.licence)
            digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if digest in seen:
                s.duplicates += 1
                continue
            seen.add(digest)
            docs.append(Document(text, doc.source, doc.licence))
    if len(docs) < 2:
        raise DataError(
            f"the inputs hold {len(docs)} non-empty distinct document(s); at least 2 are needed "
            "(one for training, one held out for validation); a single text file is split into "
            "documents of --max-document-chars, so a smaller value splits a small file too"
        )

    random.Random(seed).shuffle(docs)
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    splits = {"val": docs[:n_val], "train": docs[n_val:]}

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    try:
        dtype = token_dtype(tokenizer.vocab_size)
        split_info: dict[str, Any] = {}
        for split, split_docs in splits.items():
            writer = ShardWriter(staging / split, dtype, shard_tokens)
            n_bytes = 0
            bar = tqdm(total=len(split_docs), desc=f"tokenize {split}", disable=not progress)
            for i in range(0, len(split_docs), ENCODE_CHUNK):
                chunk = split_docs[i : i + ENCODE_CHUNK]
                # encode_batch runs on the tokenizers library's Rust thread pool.
                for doc, ids in zip(
                    chunk, tokenizer.encode_batch([d.text for d in chunk]), strict=True
                ):
                    writer.add([bos, *ids])
                    size = len(doc.text.encode())
                    n_bytes += size
                    s = stats[doc.source]
                    s.documents += 1
                    s.tokens += len(ids) + 1
                    s.bytes += size
                bar.update(len(chunk))
            bar.close()
            writer.flush()
            split_info[split] = {
                "shards": writer.shards,
                "documents": len(split_docs),
                "tokens": sum(sh["tokens"] for sh in writer.shards),
                "bytes": n_bytes,
            }
        manifest: dict[str, Any] = {
            "format": 1,
            "dtype": dtype.name,
            "seed": seed,
            "tokenizer": {
                "sha256": tokenizer_hash(tokenizer),
                "vocab_size": tokenizer.vocab_size,
                "bos_id": bos,
            },
            "splits": split_info,
            "sources": {
                name: {
                    "documents": s.documents,
                    "duplicates_removed": s.duplicates,
                    "tokens": s.tokens,
                    "bytes": s.bytes,
                    "licences": sorted(s.licences),
                }
                for name, s in sorted(stats.items())
            },
            "duplicates_removed": sum(s.duplicates for s in stats.values()),
            "skipped_files": skipped,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _place_output(staging, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
