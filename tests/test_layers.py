"""One-way layers: a command imports only what it runs, and nothing imports upwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fireside"

CHECK = """
import sys
import fireside.cli
import fireside.worker.server
parser = fireside.cli.build_parser("worker")
parser.parse_args(["worker", "--model", "m"])
web = sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette", "sqlalchemy",
    "alembic", "uvicorn") or m.startswith(("fireside.app", "fireside.api", "fireside.store")))
print(",".join(web))
"""


def test_worker_command_imports_no_web_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    assert out.stdout.strip() == ""


def test_help_imports_no_command_module() -> None:
    check = (
        "import sys, contextlib, io\nimport fireside.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    fireside.cli.main(['--help'])\n"
        "print(','.join(m for m in sys.modules if m.startswith(('fireside.app', 'fireside.train',"
        " 'fireside.data', 'fireside.eval', 'fireside.tools', 'torch', 'fastapi'))))"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_lower_layers_never_import_upper_ones() -> None:
    """`api` knows nothing of `app` (fireside/server.py wires them); `model`, `engine`,
    `worker` and `train` know neither, nor the composition root."""
    rules = {
        "api": ("fireside.app", "fireside.server"),
        "app": ("fireside.server", "fireside.cli"),
        "engine": ("fireside.api", "fireside.app", "fireside.server", "fireside.store"),
        "model": ("fireside.api", "fireside.app", "fireside.server", "fireside.engine"),
        "worker": ("fireside.api", "fireside.app", "fireside.server", "fireside.store"),
        "train": ("fireside.api", "fireside.app", "fireside.server", "fireside.cli"),
    }
    found = []
    for layer, banned in rules.items():
        for path in (PACKAGE / layer).rglob("*.py"):
            for name in _imports(path):
                if name.startswith(banned):
                    found.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert found == []
