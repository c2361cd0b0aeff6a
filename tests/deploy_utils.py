"""What the deploy tests share: fireside's parser as the CLI builds it, with the flags the
scale-out helpers agreed on (scale-common.md) while their code was being written in parallel,
and Settings read from an environment."""

from __future__ import annotations

import argparse
import inspect
import os
from pathlib import Path

import pytest

from fireside.cli import build_parser
from fireside.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

# scale-common.md: the flags the scale-out helpers agreed on while the code was being written
# in parallel. A flag the real parser lacks must be one of these; once the code has landed,
# the real-parser tests run instead of skipping.
AGREED_SERVE_FLAGS = {
    "--workers",
    "--worker-ca",
    "--worker-cert",
    "--worker-key",
    "--ssl-certfile",
    "--ssl-keyfile",
    "--forwarded-allow-ips",
}
SERVE_ENGINE_FLAGS = {
    "--model",
    "--served-model-name",
    "--device",
    "--max-num-seqs",
    "--max-model-len",
    "--kv-cache-gib",
    "--lora",
}
AGREED_WORKER_FLAGS = {
    "--host",
    "--port",
    "--metrics-port",
    "--ssl-certfile",
    "--ssl-keyfile",
    "--ssl-ca-certs",
} | SERVE_ENGINE_FLAGS
# Environment variables read outside Settings (fireside/logs.py).
AGREED_ENV = {"FIRESIDE_LOG_FORMAT"}
SETTINGS_ENV = {f"FIRESIDE_{name.upper()}" for name in Settings.model_fields}


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def fireside_parser(command: str) -> argparse.ArgumentParser:
    """fireside's parser as `fireside COMMAND ...` builds it: where build_parser takes the
    command, only that command's module is imported and its full parser built."""
    if "command" in inspect.signature(build_parser).parameters:
        return build_parser(command)  # type: ignore[call-arg,unused-ignore]
    return build_parser()


def subcommand(name: str) -> argparse.ArgumentParser | None:
    for action in fireside_parser(name)._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser | None = action.choices.get(name)
            return found
    raise AssertionError("fireside's parser has no subcommands")


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def flags_in(args: list[str]) -> set[str]:
    return {a for a in args if a.startswith("--")}


def parse_with_agreed(args: list[str]) -> argparse.Namespace:
    """`args` parsed by the real subcommand's parser, given the agreed flags it does not have
    yet (for `worker`, a parser of the agreed flags alone while the subcommand is missing)."""
    name, rest = args[0], args[1:]
    agreed = {"serve": AGREED_SERVE_FLAGS, "worker": AGREED_WORKER_FLAGS}.get(name, set())
    parser = subcommand(name)
    if parser is None:
        assert name == "worker", f"`fireside {name}` does not exist"
        parser = argparse.ArgumentParser(prog="fireside worker", exit_on_error=False)
    unknown = flags_in(rest) - option_strings(parser) - agreed
    assert not unknown, f"`fireside {name}` accepts no {sorted(unknown)}"
    for missing in sorted(agreed - option_strings(parser)):
        parser.add_argument(missing, action="append" if missing == "--lora" else "store")
    return parse_strictly(parser, rest)


def parse_strictly(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(args)
    except SystemExit as e:  # argparse says what is wrong on stderr, then exits
        raise AssertionError(f"{parser.prog} refuses {args}") from e


def parse_with_real_parser(args: list[str]) -> argparse.Namespace:
    """`args` parsed by `fireside`'s parser exactly as the CLI would; skips (saying which)
    while the scale-out branches that add the subcommand or its flags have not landed."""
    parser = subcommand(args[0])
    if parser is None:
        pytest.skip(
            f"`fireside {args[0]}` is not on this branch yet (issue 21's worker helper adds it)"
        )
    missing = flags_in(args[1:]) - option_strings(parser)
    if missing:
        pytest.skip(
            f"`fireside {args[0]}` has no {sorted(missing)} on this branch yet (issue 21's agreed flags)"
        )
    return parse_strictly(fireside_parser(args[0]), args)


def settings_from_env(env: dict[str, str]) -> Settings:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("FIRESIDE_")}
    try:
        os.environ.update(env)
        return Settings()
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)
