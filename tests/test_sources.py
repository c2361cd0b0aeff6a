"""`fireside data sources`: gathering installed text and code with licences, into prepare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fireside.data.prepare import prepare
from fireside.data.sources import RECIPES, gather, roff_to_text
from fireside.errors import DataError
from fireside.model import Tokenizer


def test_stdlib_and_packages_with_licences(tmp_path: Path, tokenizer: Tokenizer) -> None:
    summary = gather(tmp_path / "corpus", ["python-stdlib", "python-packages"], max_files=5)
    assert summary["python-stdlib"]["documents"] == 5
    assert summary["python-stdlib"]["licences"] == {"PSF-2.0": 5}
    assert summary["python-packages"]["documents"] == 5
    assert all(lic.strip() for lic in summary["python-packages"]["licences"])
    lines = (tmp_path / "corpus" / "python-stdlib.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert (
        record["source"] == "python-stdlib" and Path(record["path"]).read_text() == record["text"]
    )
    assert json.loads((tmp_path / "corpus" / "sources.json").read_text()) == summary

    manifest = prepare([tmp_path / "corpus"], tokenizer, tmp_path / "data", progress=False)
    assert manifest["sources"]["python-stdlib"]["licences"] == ["PSF-2.0"]
    stdlib = manifest["sources"]["python-stdlib"]
    assert stdlib["documents"] + stdlib["duplicates_removed"] == 5


def test_debian_docs_record_the_package_licence(tmp_path: Path) -> None:
    if not RECIPES["debian-docs"].available():
        pytest.skip("this machine has no /usr/share/doc")
    summary = gather(tmp_path, ["debian-docs"], max_files=10)
    assert summary["debian-docs"]["documents"] == 10
    assert all(lic.startswith("Debian:") for lic in summary["debian-docs"]["licences"])


def test_roff_to_text() -> None:
    source = '.\\" comment\n.TH LS 1\n.SH NAME\nls \\- list directory contents\n.SH SYNOPSIS\n.B ls\n\\fB\\-a\\fR shows all\n'
    assert (
        roff_to_text(source) == "NAME\nls - list directory contents\n\nSYNOPSIS\nls\n-a shows all"
    )


def test_unknown_recipe(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown recipe"):
        gather(tmp_path, ["wikipedia"])


def test_cli_lists_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    from fireside.cli import main

    assert main(["data", "sources"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES) and "PSF-2.0" in out
