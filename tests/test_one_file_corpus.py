"""One large text file is a corpus: `fireside data prepare` and `fireside train tokenizer`
split it into documents at blank lines and hold out a slice."""

from __future__ import annotations

from pathlib import Path

import pytest

from fireside.cli import main
from fireside.data.prepare import split_text
from fireside.data.shards import read_manifest
from fireside.errors import DataError
from fireside.model import Tokenizer

PARAGRAPH = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


def shakespeare_like(path: Path, paragraphs: int = 400) -> Path:
    """One file, as nanoGPT's tinyshakespeare is: many blank-line paragraphs, nothing else."""
    text = "\n".join(f"{PARAGRAPH.strip()} ({i})\n" for i in range(paragraphs))
    path.write_text(text)
    return path


def test_split_text_cuts_at_blank_lines_and_joins_back() -> None:
    text = "aaaa\n\nbbbb\n\ncccc\n\ndddd"
    pieces = split_text(text, 12)
    assert pieces == ["aaaa\n\nbbbb\n\n", "cccc\n\ndddd"]
    assert "".join(pieces) == text
    assert split_text("short", 100) == ["short"]


def test_split_text_without_blank_lines_cuts_at_lines_then_anywhere() -> None:
    assert split_text("line one\nline two\nline three", 12) == [
        "line one\n",
        "line two\n",
        "line three",
    ]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    with pytest.raises(DataError, match="at least 1"):
        split_text("x", 0)


def test_prepare_accepts_one_file(tmp_path: Path, tokenizer: Tokenizer) -> None:
    corpus = shakespeare_like(tmp_path / "input.txt")
    tokenizer.save(tmp_path / "tok")
    out = tmp_path / "data"
    args = ["data", "prepare", "--input", str(corpus), "--tokenizer", str(tmp_path / "tok")]
    args += ["--output", str(out), "--no-progress", "--val-fraction", "0.1"]
    assert main([*args, "--max-document-chars", "2000"]) == 0
    splits = read_manifest(out)["splits"]
    documents = splits["train"]["documents"] + splits["val"]["documents"]
    assert documents == len(split_text(corpus.read_text(), 2000)) > 10
    assert splits["val"]["documents"] == round(0.1 * documents)
    # The held-out slice and the training pieces are the whole file, byte for byte apart from
    # the blank lines trimmed at the pieces' ends.
    total = splits["train"]["bytes"] + splits["val"]["bytes"]
    assert abs(total - len(corpus.read_bytes())) <= 2 * documents


def test_one_small_file_still_needs_two_documents(
    tmp_path: Path, tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenizer.save(tmp_path / "tok")
    small = tmp_path / "one.txt"
    small.write_text("Just one short paragraph.")
    args = [
        "data",
        "prepare",
        "--input",
        str(small),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--output",
        str(tmp_path / "data"),
        "--no-progress",
    ]
    assert main(args) == 2
    assert "--max-document-chars" in capsys.readouterr().err


def test_train_tokenizer_accepts_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = shakespeare_like(tmp_path / "input.txt")
    args = [
        "train",
        "tokenizer",
        "--input",
        str(corpus),
        "--vocab-size",
        "300",
        "--output",
        str(tmp_path / "tok"),
        "--max-document-chars",
        "1000",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    pieces = len(split_text(corpus.read_text(), 1000))
    held_out = -(-pieces // 50)
    assert f"trained on {pieces - held_out} documents" in out
    assert f"held out {held_out} documents" in out
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
