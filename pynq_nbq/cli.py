"""The ``nbq`` command line: one entry point, one module per subcommand.

Each module named in :data:`COMMANDS` lives in :mod:`pynq_nbq.commands` and
exposes ``register(subparsers)``, which adds its subparser and sets
``func=callable(args) -> int`` as the default.  Subcommands that need torch
import it lazily (inside ``func``) so that the board install never does.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
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
    "check",
)


class CommandError(Exception):
    """An error a subcommand reports to the user as one line, exit status 2."""


def add_backend_option(
    p: argparse.ArgumentParser, default: str = "auto", help_prefix: str = ""
) -> None:
    """``--backend`` with the backend registry's names as its choices
    (:data:`pynq_nbq.backends.BACKENDS`), the same help everywhere."""
    from .backends import BACKENDS, backend_entry

    listed = "; ".join(f"{n}: {backend_entry(n).summary}" for n in BACKENDS)
    p.add_argument(
        "--backend",
        default=default,
        choices=BACKENDS,
        help=f"{help_prefix}default {default} ({listed})",
    )


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


#: Exit status when the reader of stdout went away (``nbq perf | head -1``): the shell's
#: status for a process ended by SIGPIPE, 128 + 13.
EXIT_BROKEN_PIPE = 141


def _stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone (poll reports POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor, or no poll() here
        return False


def _stdout_gone() -> int:
    """Quiet end after a BrokenPipeError on stdout: point stdout at /dev/null so that the
    interpreter's final flush cannot fail again, and return :data:`EXIT_BROKEN_PIPE`."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (captured stdout): nothing to flush
        pass
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    """Run one ``nbq`` command; the exit status: 0 ok, 1 no command, 2 an error reported in
    one line, 141 when stdout's reader closed the pipe early (no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return rc
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # another pipe (a child process, a socket) broke: a bug, not the reader
        return _stdout_gone()
    except (CommandError, NbqError) as exc:
        print(f"nbq {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from pynq_nbq.cli import main as _main  # the package's module: its CommandError is caught

    sys.exit(_main())
