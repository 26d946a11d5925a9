"""The ``nbq`` command line: one entry point, one module per subcommand.

Each module named in :data:`COMMANDS` lives in :mod:`pynq_nbq.commands` and
exposes ``register(subparsers)``, which adds its subparser and sets
``func=callable(args) -> int`` as the default.  Subcommands that need torch
import it lazily (inside ``func``) so that the board install never does.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import NbqError

#: Subcommand modules under ``pynq_nbq.commands``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "train",
    "eval",
    "export",
    "import_qonnx",  # nbq import
    "classify",
    "info",
    "perf",
    "serve",
    "bench",
)


class CommandError(Exception):
    """An error a subcommand reports to the user as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbq",
        description="n-bit power-of-two (shift) neural networks for Zynq FPGAs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pynq_nbq.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pynq_nbq.commands.{name}":
                continue  # subcommand not written yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (CommandError, NbqError) as exc:
        print(f"nbq {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from pynq_nbq.cli import main as _main  # the package's module: its CommandError is caught

    sys.exit(_main())
