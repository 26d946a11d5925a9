"""Lazy torch import for the workstation-only subcommands."""

from __future__ import annotations

from ..cli import CommandError


def require_torch() -> None:
    """Raise a CommandError that says how to install torch when it is missing."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError as exc:
        raise CommandError(
            "this subcommand needs PyTorch (workstation only). Install the CPU build with "
            "'pip install torch==2.13.0' (or your own build), then 'pip install -e .[train]'."
        ) from exc
