"""Offline half of scripts/check_board_wheels.py: the base requirements keep every package the
PYNQ images ship (pip must not reinstall the image's numpy, Pillow or Flask), and the board
install pulls no pynq (its 3.1/4.0 releases pin grpcio==1.64.0, with no aarch64 wheel)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts import check_board_wheels as cbw

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("image", sorted(cbw.IMAGES))
def test_base_requirements_keep_the_image_packages(image):
    rows = cbw.keep_or_reinstall(cbw.base_requirements(), cbw.IMAGES[image]["packages"])
    verdicts = {req.split(">")[0].split("=")[0]: verdict for req, _, verdict in rows}
    assert verdicts["numpy"] == verdicts["pillow"] == verdicts["flask"] == "kept", rows


def test_a_too_new_bound_is_reported():
    reqs = [cbw.Requirement("numpy>=1.22"), cbw.Requirement("waitress")]
    rows = cbw.keep_or_reinstall(reqs, cbw.IMAGES["v3.0.1"]["packages"])
    assert [v for _, _, v in rows] == ["REINSTALLED", "from pip"]


def test_no_extra_a_board_installs_pulls_pynq():
    tree = ast.parse((ROOT / "setup.py").read_text())
    setup_call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"
    )
    extras = next(k.value for k in setup_call.keywords if k.arg == "extras_require")
    board = next(v for k, v in zip(extras.keys, extras.values) if k.value == "board")
    assert isinstance(board, ast.List) and board.elts == []
    assert not any("pynq" in str(r).lower() for r in cbw.base_requirements())
