"""The models directory of ``nbq serve``: which bundles it offers and how a client's
model name is resolved inside it (never outside), and error messages that name paths
relative to it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import errors

MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def resolve_model_dir(models_dir: Path, name: Any) -> Path:
    """The bundle directory ``name`` inside ``models_dir``; refuses anything else."""
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name) or ".." in name:
        raise errors.BadRequest(
            f"bad model name {str(name)[:80]!r}: give the name of a bundle directory in the "
            "models directory (letters, digits, '.', '_', '-'; no paths)"
        )
    root = models_dir.resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise errors.BadRequest(f"model name {name!r} escapes the models directory")
    if not path.is_dir():
        raise errors.NotFound(
            f"no model {name!r} in the models directory (available: {available_models(models_dir)})"
        )
    return path


def relative_paths(message: str, bundle_dir: Path) -> str:
    """``message`` with the models directory's absolute path taken out (paths are named
    relative to it: ``bundle/manifest.json``)."""
    for root in {str(bundle_dir.parent), str(bundle_dir.parent.resolve())}:
        message = message.replace(root.rstrip("/") + "/", "").replace(root, ".")
    return message


def available_models(models_dir: Path) -> list[str]:
    """Bundle directories (with a manifest) directly in ``models_dir``; symlinks that
    resolve elsewhere are left out (``POST /v1/model`` refuses them)."""
    if not models_dir.is_dir():
        return []
    root = models_dir.resolve()
    return sorted(
        p.name
        for p in models_dir.iterdir()
        if p.resolve().parent == root and (p / "manifest.json").is_file()
    )
