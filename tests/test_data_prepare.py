"""`fireside data prepare`: inputs of every kind, cleaning, deduplication, shards, bad input."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fireside.cli import main
from fireside.data.prepare import clean, prepare, split_text
from fireside.data.shards import check_tokenizer, open_split, read_manifest, token_dtype
from fireside.errors import DataError, TokenizerError
from fireside.model import Tokenizer, train_tokenizer
from tests.conftest import stdlib_texts


def _corpus(root: Path) -> Path:
    """A small mixed corpus: code, prose, JSONL (with a licence) and Parquet."""
    src = root / "corpus"
    (src / "code").mkdir(parents=True)
    for i, text in enumerate(stdlib_texts(12)):
        (src / "code" / f"mod{i}.py").write_text(text)
    (src / "notes.md").write_text("# Notes\r\n\r\nFireside trains\x00 its own model.\n\n\n")
    (src / "copy.txt").write_text("# Notes\n\nFireside trains its own model.")  # a duplicate
    (src / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # not a text suffix: ignored
    records = [
        {"text": f"Document number {i} about tokens.", "licence": "CC0-1.0"} for i in range(6)
    ]
    (src / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    pq.write_table(
        pa.table({"text": ["A parquet row.", "Another parquet row.", None]}), src / "rows.parquet"
    )
    return src


def test_prepare_builds_shards_and_manifest(tmp_path: Path, tokenizer: Tokenizer) -> None:
    src = _corpus(tmp_path)
    out = tmp_path / "data"
    manifest = prepare([src], tokenizer, out, val_fraction=0.1, progress=False)
    assert manifest == read_manifest(out)
    assert manifest["dtype"] == "uint16"
    assert manifest["duplicates_removed"] == 1
    code_docs = sum(len(split_text(t)) for t in stdlib_texts(12))  # long modules are split
    assert code_docs > 12
    n_docs = code_docs + 1 + 6 + 2
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert train["documents"] + val["documents"] == n_docs
    assert val["documents"] == 2
    source = manifest["sources"]["corpus"]
    assert source["documents"] == n_docs and source["licences"] == ["CC0-1.0"]

    # Every document is BOS + its tokens, and decodes back to the cleaned text.
    texts = set()
    for split in ("train", "val"):
        for shard in open_split(out, split):
            bounds = [*shard.doc_starts.tolist(), len(shard.tokens)]
            for a, b in itertools.pairwise(bounds):
                ids = np.asarray(shard.tokens[a:b]).tolist()
                assert ids[0] == tokenizer.bos_id
                texts.add(tokenizer.decode(ids[1:]))
    assert "# Notes\n\nFireside trains its own model." in texts
    assert "A parquet row." in texts and "Document number 5 about tokens." in texts
    assert sum(len(s.tokens) for s in open_split(out, "train")) == train["tokens"]


def test_prepare_is_deterministic_and_shuffles_with_seed(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    src = _corpus(tmp_path)
    a = prepare([src], tokenizer, tmp_path / "a", progress=False, seed=1)
    b = prepare([src], tokenizer, tmp_path / "b", progress=False, seed=1)
    prepare([src], tokenizer, tmp_path / "c", progress=False, seed=2)
    read = lambda d: open_split(d, "train")[0].tokens.tobytes()  # noqa: E731
    assert a == b and read(tmp_path / "a") == read(tmp_path / "b")
    assert read(tmp_path / "a") != read(tmp_path / "c")


def test_globs_and_several_shards(tmp_path: Path, tokenizer: Tokenizer) -> None:
    src = _corpus(tmp_path)
    manifest = prepare(
        [str(src / "code" / "*.py"), src / "notes.md"],
        tokenizer,
        tmp_path / "data",
        shard_tokens=5000,
        progress=False,
    )
    assert len(manifest["splits"]["train"]["shards"]) > 1
    assert set(manifest["sources"]) == {str(src / "code" / "*.py"), "notes.md"}


def test_clean() -> None:
    assert clean("\n\nline\r\n\tindented \x07bell\x00  \n\n") == "line\n\tindented bell"


def test_uint32_for_large_vocabularies() -> None:
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "missing"), "does not exist"),
        (lambda d: str(d / "*.nothing"), "matches no file"),
        (lambda d: (d / "empty").mkdir() or str(d / "empty"), "holds no text"),
        (lambda d: (d / "e.txt").write_text("  \n") and str(d / "e.txt"), "non-empty"),
        (
            lambda d: (d / "bin.txt").write_bytes(b"\xff\xfe\x00bad") and str(d / "bin.txt"),
            "not UTF-8",
        ),
        (
            lambda d: (
                (d / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
                and str(d / "bad.jsonl")
            ),
            r"bad\.jsonl:2: malformed JSON",
        ),
        (
            lambda d: (
                (d / "nt.jsonl").write_text('{"text": "ok"}\n\n{"body": "x"}\n')
                and str(d / "nt.jsonl")
            ),
            r"nt\.jsonl:3: expected an object with a string 'text' field",
        ),
        (
            lambda d: (d / "x.parquet").write_bytes(b"not parquet") and str(d / "x.parquet"),
            "Parquet",
        ),
    ],
)
def test_bad_input_is_a_clear_error(
    tmp_path: Path, tokenizer: Tokenizer, make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        prepare([path], tokenizer, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no half output


def test_unreadable_file(tmp_path: Path, tokenizer: Tokenizer) -> None:
    # /proc/self/mem is a file that fails to read even for root (whom mode bits do not stop).
    with pytest.raises(DataError, match="cannot be read"):
        prepare(["/proc/self/mem"], tokenizer, tmp_path / "out", progress=False)


def test_existing_output_needs_overwrite(tmp_path: Path, tokenizer: Tokenizer) -> None:
    src = _corpus(tmp_path)
    prepare([src], tokenizer, tmp_path / "data", progress=False)
    with pytest.raises(DataError, match="--overwrite"):
        prepare([src], tokenizer, tmp_path / "data", progress=False)
    prepare([src], tokenizer, tmp_path / "data", progress=False, overwrite=True, seed=3)
    assert read_manifest(tmp_path / "data")["seed"] == 3


def test_data_made_with_another_tokenizer_is_refused(tmp_path: Path, tokenizer: Tokenizer) -> None:
    prepare([_corpus(tmp_path)], tokenizer, tmp_path / "data", progress=False)
    other = train_tokenizer(stdlib_texts(5), vocab_size=300)
    with pytest.raises(TokenizerError, match="different tokenizer"):
        check_tokenizer(read_manifest(tmp_path / "data"), other, tmp_path / "data")


def test_cli_reports_errors_with_exit_code(
    tmp_path: Path, tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenizer.save(tmp_path / "tok")
    (tmp_path / "bad.jsonl").write_text("{}\n")
    argv = ["data", "prepare", "--input", str(tmp_path / "bad.jsonl"), "--tokenizer"]
    assert main([*argv, str(tmp_path / "tok"), "--output", str(tmp_path / "d")]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    src = _corpus(tmp_path)
    argv = ["data", "prepare", "--input", str(src), "--tokenizer", str(tmp_path / "tok")]
    assert main([*argv, "--output", str(tmp_path / "d"), "--no-progress"]) == 0
    assert "duplicates removed" in capsys.readouterr().out
