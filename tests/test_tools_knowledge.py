"""The knowledge index: extractors over real file formats, BM25 search, `no results`, the CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from fireside.cli import main
from fireside.settings import data_dir
from fireside.tools.base import ToolError, call_tool, run_tool
from fireside.tools.extract import (
    Entry,
    dictd_entries,
    directory_files,
    man_pages,
    python_source_entries,
    python_stdlib,
    summarize,
    wordnet_entries,
)
from fireside.tools.knowledge import (
    NO_RESULTS,
    KnowledgeIndex,
    add_entries,
    build_index,
    format_hits,
    query_names,
    result_hits,
    search_tool,
)

TAR_PAGE = r""".\" comment
.TH TAR 1 "July 13, 2020" "TAR" "GNU TAR Manual"
.SH NAME
tar \- an archiving utility
.SH SYNOPSIS
\fBtar\fR [\fIOPTIONS\fR]
.SH DESCRIPTION
GNU
.B tar
is an archiving program designed to store multiple files in a single file (an
\fIarchive\fR), and to manipulate such archives.  The archive can be either a regular
file or a device.  A third sentence that the summary leaves out.
"""
GREP_PAGE = r""".TH GREP 1
.SH "NAME"
grep, egrep, fgrep \- print lines that match patterns
.SH DESCRIPTION
.B grep
searches for patterns in each file.
"""
TARFMT_PAGE = r""".TH TAR 5
.SH NAME
tar \- format of tape archive files
.SH DESCRIPTION
The tar archive format collects any number of files into a single stream.
"""
MDOC_PAGE = """.Dd 2020
.Sh NAME
.Nm ssh-keyscan
.Nd gather SSH public keys from servers
.Sh DESCRIPTION
.Nm
is a utility for gathering the public SSH host keys of a number of hosts.
"""


@pytest.fixture
def man_root(tmp_path: Path) -> Path:
    root = tmp_path / "man"
    (root / "man1").mkdir(parents=True)
    (root / "man5").mkdir()
    (root / "man1" / "tar.1.gz").write_bytes(gzip.compress(TAR_PAGE.encode()))
    (root / "man1" / "grep.1").write_text(GREP_PAGE)
    (root / "man1" / "egrep.1").write_text(".so man1/grep.1\n")
    (root / "man1" / "ssh-keyscan.1").write_text(MDOC_PAGE)
    (root / "man5" / "tar.5").write_text(TARFMT_PAGE)
    return root


def test_man_pages_give_name_and_description(man_root: Path) -> None:
    entries = {e.id: e for e in man_pages(man_root)}
    assert set(entries) == {"man:tar.1", "man:grep.1", "man:ssh-keyscan.1", "man:tar.5"}
    tar = entries["man:tar.1"]
    assert tar.title == "tar(1)"
    assert tar.summary == (
        "tar - an archiving utility. GNU tar is an archiving program designed to store multiple "
        "files in a single file (an archive), and to manipulate such archives. The archive can "
        "be either a regular file or a device."
    )
    assert "\\f" not in tar.text and "third sentence" in tar.text
    assert entries["man:grep.1"].names == ("egrep", "fgrep", "grep")
    assert entries["man:ssh-keyscan.1"].summary.startswith(
        "ssh-keyscan - gather SSH public keys from servers. ssh-keyscan is a utility"
    )


def test_python_docstrings_by_source_and_by_import() -> None:
    source = '''"""A module.\n\nMore."""
def public(x):
    """Do the public thing.

    Details that stay out of the summary.
    """
def _private():
    """Hidden."""
class Thing:
    """A thing with ``markup`` and :func:`roles`."""
    def method(self):
        """Run the method."""
'''
    entries = {e.title: e for e in python_source_entries("mod", source, "mod.py")}
    assert set(entries) == {"mod", "mod.public", "mod.Thing", "mod.Thing.method"}
    assert entries["mod.public"].summary == "Do the public thing."
    assert entries["mod.public"].id == "py:mod.public"
    assert entries["mod.Thing"].summary == "A thing with markup and roles."


def test_the_real_stdlib_has_json_dumps_os_path_and_math(tmp_path: Path) -> None:
    titles = {e.title: e for e in python_stdlib()}
    assert titles["json.dumps"].summary.startswith("Serialize obj to a JSON formatted str")
    assert "os.path.join" in titles  # posixpath under the name people use
    assert titles["math.sqrt"].summary == "Return the square root of x."
    assert titles["len"].summary == "Return the number of items in a container."
    assert not any(t.startswith(("test.", "idlelib")) for t in titles)


def _b64(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = alphabet[n % 64] + out
        n //= 64
        if not n:
            return out


def test_dictd_and_wordnet_dictionaries(tmp_path: Path) -> None:
    body = b"lexicon\n  The vocabulary of a language. A second sentence.\n"
    (tmp_path / "gcide.dict.dz").write_bytes(gzip.compress(body))
    (tmp_path / "gcide.index").write_text(
        f"00-database-url\tA\tB\nlexicon\t{_b64(0)}\t{_b64(len(body))}\n"
    )
    [entry] = list(dictd_entries(tmp_path / "gcide.index"))
    assert (entry.id, entry.title, entry.names) == ("dict:gcide:lexicon", "lexicon", ("lexicon",))
    assert entry.summary == "The vocabulary of a language. A second sentence."

    (tmp_path / "data.noun").write_text(
        "  1 This software and database is being provided\n"
        "06424869 10 n 02 lexicon 0 vocabulary 0 001 @ 06424377 n 0000 | a language user's "
        'knowledge of words; "his lexicon was small"\n'
    )
    [noun] = list(wordnet_entries(tmp_path / "data.noun"))
    assert noun.title == "lexicon" and noun.names == ("lexicon", "vocabulary")
    assert noun.summary.startswith("(noun) a language user's knowledge of words")


def test_user_files_in_chunks_with_headings(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text(
        "# Backups\n\nThe backup job runs nightly at two. It copies /srv to the NAS.\n"
    )
    (docs / "paper.txt").write_text(("word " * 400 + "\n\n") * 3)  # text out of a PDF
    (docs / "image.png").write_bytes(b"\x89PNG")
    entries = list(directory_files(docs))
    notes = [e for e in entries if e.source.endswith("notes.md")]
    assert notes[0].title == "notes.md: Backups"
    assert (
        notes[0].summary
        == "Backups. The backup job runs nightly at two. It copies /srv to the NAS."
    )
    assert len([e for e in entries if e.source.endswith("paper.txt")]) >= 2
    assert not any(e.source.endswith(".png") for e in entries)


def test_summary_is_short() -> None:
    text = "One. Two is here. Three is too. Four never shows."
    assert summarize(text) == "One. Two is here. Three is too."
    assert len(summarize("word " * 500)) <= 300


@pytest.fixture
def index(tmp_path: Path, man_root: Path) -> Path:
    db = tmp_path / "k.db"
    source = '"""JSON encoding and decoding."""\ndef dumps(obj):\n    """Serialize obj to a JSON formatted str."""\n'
    counts = build_index(
        db, {"man": man_pages(man_root), "python": python_source_entries("json", source, "j.py")}
    )
    assert counts == {"man": 4, "python": 2}
    return db


def test_search_ranks_the_exact_name_first(index: Path) -> None:
    kb = KnowledgeIndex(index)
    hits = kb.search("What does the `tar` command do?")
    assert [h.title for h in hits[:2]] == ["tar(1)", "tar(5)"]
    assert hits[0].snippet.startswith("tar - an archiving utility.")
    assert kb.search("egrep")[0].title == "grep(1)"
    assert kb.search("python json dumps")[0].title == "json.dumps"
    assert kb.search("archive files")[0].title.startswith("tar(")
    assert len(kb.search("tar", limit=1)) == 1


HOWTO_SOURCE = '''"""Operating system interfaces."""
def listdir(path):
    """Return a list containing the names of the files in the directory."""
def makedirs(name):
    """Make a directory and all intermediate ones."""
def getpid():
    """Return the current process id."""
class Walker:
    def listdir(self):
        """Return a list containing the names of the files in the directory."""
'''


def _py(title: str, summary: str) -> Entry:
    return Entry(f"py:{title}", title, title, summary, summary, names=(title.lower(),))


def _man(name: str, summary: str) -> Entry:
    return Entry(f"man:{name}.1", f"{name}(1)", name, summary, summary, names=(name,))


@pytest.fixture
def howto_index(tmp_path: Path, man_root: Path) -> Path:
    """Entries named by common words (`list`, `file`, `copy`) beside the ones questions want."""
    db = tmp_path / "howto.db"
    sqrt_page = Entry(
        "man:sqrt.3",
        "sqrt(3)",
        "sqrt.3",
        "sqrt - square root function. These functions return the square root of x.",
        "sqrt - square root function. These functions return the square root of x.",
        names=("sqrt",),
    )
    python = [
        *python_source_entries("os", HOWTO_SOURCE, "os.py"),
        _py("list", "Built-in mutable sequence. If no argument is given, a new empty list."),
        _py("file", "A file object: read or write the files of a directory."),
        _py("copy", "Generic (shallow and deep) copying operations."),
        _py("copy.copy", "Shallow copy operation on arbitrary Python objects."),
        _py("copy.deepcopy", "Deep copy operation on arbitrary Python objects."),
        _py("math.sqrt", "Return the square root of x."),
    ]
    kill = [
        _man("kill", "kill - send a signal to a process. The default signal for kill is TERM."),
        _man(
            "killall",
            "killall - kill processes by name. killall sends a signal to all processes running "
            "any of the commands.",
        ),
    ]
    build_index(db, {"man": [*man_pages(man_root), sqrt_page, *kill], "python": python})
    return db


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("list files directory", "os.listdir"),  # `list` and `file` are names, not the question
        ("list the files in a directory", "os.listdir"),
        ("make directory all intermediate ones", "os.makedirs"),
        ("get current process id", "os.getpid"),
        ("deep copy arbitrary objects", "copy.deepcopy"),
        ("get square root x", "math.sqrt"),  # Python's before the C library's page
        ("kill process", "kill(1)"),  # a word that names a row holding the rest raises it
    ],
)
def test_a_question_in_words_finds_the_entry_that_answers_it(
    howto_index: Path, query: str, title: str
) -> None:
    assert KnowledgeIndex(howto_index).search(query)[0].title == title


def test_exact_names_still_win_in_a_question(howto_index: Path) -> None:
    kb = KnowledgeIndex(howto_index)
    assert kb.search("list")[0].title == "list"  # one word is a name
    assert kb.search("What is `list`?")[0].title == "list"
    assert kb.search("what does list() return")[0].title == "list"  # code: before parentheses
    assert kb.search("how do I use os.listdir")[0].title == "os.listdir"
    assert kb.search("copy deepcopy")[0].title == "copy.deepcopy"  # adjacent words joined
    assert kb.search("tar")[0].title == "tar(1)"
    assert kb.search("ssh-keyscan servers")[0].title == "ssh-keyscan(1)"
    assert kb.search("brazoquim") == [] and kb.search("os.brazoquim") == []


def test_python_in_the_query_puts_python_entries_first(howto_index: Path) -> None:
    kb = KnowledgeIndex(howto_index)
    assert kb.search("sqrt function")[0].title == "sqrt(3)"  # `sqrt` alone names the C page
    assert kb.search("python sqrt function")[0].title == "math.sqrt"


def test_a_row_must_hold_most_of_the_query_words(howto_index: Path) -> None:
    kb = KnowledgeIndex(howto_index)
    assert kb.search("directory capital france") == []  # one word of three is not enough
    assert "os.listdir" in [h.title for h in kb.search("files directory france")]  # two of three


def test_query_names_are_the_words_that_look_like_code() -> None:
    assert query_names("tar") == ["tar"]
    assert query_names("list files directory") == [
        "list.files",
        "list-files",
        "files.directory",
        "files-directory",
    ]
    assert query_names("how do I use os.path.join with pg_ctl")[:2] == ["os.path.join", "pg_ctl"]
    assert query_names("what does `sorted` do with keys")[0] == "sorted"
    assert query_names("is len() fast")[0] == "len"


@pytest.mark.parametrize(
    "query", ["florbix quaztle", "What is the capital of France?", "what does the", "", "?!"]
)
def test_nothing_relevant_is_no_results(index: Path, query: str) -> None:
    assert KnowledgeIndex(index).search(query) == []
    assert asyncio.run(call_tool(search_tool(index), {"query": query})) == (NO_RESULTS, False)


def test_fts_syntax_in_a_query_is_just_words(index: Path) -> None:
    kb = KnowledgeIndex(index)
    assert kb.search('tar" OR NEAR(') == []  # "near" is a word no entry holds
    assert kb.search('tar" OR archiving NEAR(')[0].title.startswith("tar(")


def test_search_tool_output_is_one_line_per_hit(index: Path) -> None:
    text, failed = asyncio.run(call_tool(search_tool(index), {"query": "grep"}))
    assert not failed
    assert text.splitlines()[0] == (
        "grep(1): grep, egrep, fgrep - print lines that match patterns. grep searches for "
        "patterns in each file."
    )
    assert text == format_hits(KnowledgeIndex(index).search("grep"))


def test_a_name_no_entry_bears_is_said_above_its_closest_hits(index: Path) -> None:
    # Whether `json.dumps` is `json.dumps-frob` is the search's to say, not the model's.
    def search(query: str) -> str:
        text, failed = asyncio.run(call_tool(search_tool(index), {"query": query}))
        assert not failed
        return text

    near = search("`json.dumps-frob`").splitlines()
    assert near[0] == "no entry is named `json.dumps-frob`; the closest:"
    assert near[1].startswith("json.dumps: Serialize obj")
    assert result_hits("\n".join(near)) == near[1:]
    for named in ["json.dumps", "tar", "archive files", "python json dumps"]:
        text = search(named)
        assert not text.startswith("no entry"), named
        assert result_hits(text) == text.splitlines()
    assert result_hits(NO_RESULTS) == []


def test_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="fireside knowledge build"):
        KnowledgeIndex(tmp_path / "none.db").search("tar")
    assert not (tmp_path / "none.db").exists()


def test_user_entries_survive_a_rebuild_and_replace_by_id(
    index: Path, tmp_path: Path, man_root: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "runbook.md").write_text("# Restore\n\nRun zorgctl restore to bring the vault back.\n")
    assert add_entries(index, directory_files(docs)) == 1
    assert add_entries(index, directory_files(docs)) == 1  # again: replaced, not doubled
    kb = KnowledgeIndex(index)
    assert [h.title for h in kb.search("zorgctl")] == ["runbook.md: Restore"]
    build_index(index, {"man": man_pages(man_root)})
    assert [h.title for h in kb.search("zorgctl")] == ["runbook.md: Restore"]
    assert kb.count() == {"file": 1, "man": 4}
    with sqlite3.connect(index) as db:  # no stale temporary files, no orphan names
        assert db.execute(
            "SELECT count(*) FROM names WHERE entry NOT IN (SELECT rowid FROM entries)"
        ).fetchone() == (0,)
    assert [p.name for p in index.parent.iterdir() if p.name.startswith(".")] == []


def test_data_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FIRESIDE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "fireside"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "fireside"
    monkeypatch.setenv("FIRESIDE_DATA_DIR", str(tmp_path / "data"))
    assert data_dir() == tmp_path / "data"


def test_cli_add_and_search_in_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIRESIDE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.txt").write_text("The office wifi password rotates every Monday.\n")
    assert main(["knowledge", "add", str(docs)]) == 0
    assert (tmp_path / "data" / "knowledge.db").is_file()
    capsys.readouterr()
    assert main(["knowledge", "search", "wifi password"]) == 0
    assert capsys.readouterr().out == "faq.txt: The office wifi password rotates every Monday.\n"
    assert main(["knowledge", "search", "florbix"]) == 0
    assert capsys.readouterr().out == "no results\n"
    assert main(["knowledge", "add", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "docs"]  # nothing in the cwd


def test_cli_build_from_the_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "k.db"
    assert main(["knowledge", "build", "--db", str(db), "--sources", "python"]) == 0
    assert "python" in capsys.readouterr().out
    assert main(["knowledge", "search", "--db", str(db), "json.dumps"]) == 0
    assert capsys.readouterr().out.startswith("json.dumps: Serialize obj to a JSON formatted str")


def test_the_default_index_is_built_on_first_search(
    tmp_path: Path, man_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fireside.tools import knowledge

    monkeypatch.setenv("FIRESIDE_DATA_DIR", str(tmp_path / "data"))
    built: list[int] = []

    def sources() -> dict[str, Iterable[Entry]]:
        built.append(1)
        return {"man": man_pages(man_root)}

    monkeypatch.setattr(knowledge, "default_sources", sources)
    tool = knowledge.search_tool()
    assert not (tmp_path / "data" / "knowledge.db").exists()
    text, failed = asyncio.run(call_tool(tool, {"query": "tar"}))
    assert not failed and text.startswith("tar(1): tar - an archiving utility.")
    assert (tmp_path / "data" / "knowledge.db").is_file()
    assert run_tool(knowledge.search_tool(), {"query": "grep"})[0].startswith("grep(1)")
    assert built == [1]  # built once, then read


def test_building_the_index_does_not_count_against_the_search_time_limit(
    tmp_path: Path, man_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh install's first search builds the index (a minute on a laptop); the search's
    10-s limit is for the query, so that first search answers instead of timing out."""
    from fireside.tools import knowledge

    monkeypatch.setenv("FIRESIDE_DATA_DIR", str(tmp_path / "data"))

    def slow_sources() -> dict[str, Iterable[Entry]]:
        time.sleep(1.5)  # a build longer than the limit below
        return {"man": man_pages(man_root)}

    monkeypatch.setattr(knowledge, "default_sources", slow_sources)
    tool = dataclasses.replace(knowledge.search_tool(), timeout_s=1.0)
    text, failed = asyncio.run(call_tool(tool, {"query": "tar"}))
    assert not failed, text
    assert text.startswith("tar(1)")
