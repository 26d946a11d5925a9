"""The backend registry: one place that makes a backend, declared capabilities, CLI
choices from it; the engine reads declarations, never probes for features."""

from __future__ import annotations

import numpy as np
import pytest

from pynq_nbq import backends as B
from pynq_nbq.cli import build_parser
from pynq_nbq.engine import Engine
from pynq_nbq.ops import conv_layer
from pynq_nbq.testing import random_bundle, random_graph_bundle


def test_registry_names_and_declarations():
    assert B.BACKENDS == ("auto", "numpy", "native", "csim", "fpga")
    assert B.backend_names("cpu") == ("auto", "numpy", "native")
    assert B.backend_names("device") == ("csim", "fpga")
    assert B.backend_entry("fpga").capabilities == B.Capabilities(
        arm_ops=True, checks_bundle=True, device=True
    )
    assert B.capabilities_of(B.get_backend("numpy")).thread_safe
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'; choose one of \('auto'"):
        B.get_backend("tpu")
    with pytest.raises(ValueError, match="already registered"):
        B.register_backend(B.backend_entry("numpy"))


@pytest.mark.parametrize("command", ["classify", "info", "serve", "bench"])
def test_cli_backend_choices_come_from_the_registry(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--backend", "tpu"])
    err = capsys.readouterr().err
    assert "invalid choice: 'tpu' (choose from 'auto', 'numpy', 'native', 'csim', 'fpga')" in err


class _Declared:
    """A backend declaring ARM-side ops and bundle checks, recording what the engine called."""

    name = "declared"
    description = "records calls"
    capabilities = B.Capabilities(arm_ops=True, checks_bundle=True)

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run_conv(self, x, spec):
        self.calls.append(f"run_conv {spec.name}")
        return conv_layer(x, spec)

    def arm_conv(self, x, spec):
        self.calls.append(f"arm_conv {spec.name}")
        return conv_layer(x, spec)

    def check_bundle(self, manifest):
        self.calls.append(f"check {manifest.name}")


class _Undeclared(_Declared):
    """The same methods, declared nowhere: the engine must not call them."""

    name = "undeclared"
    capabilities = B.Capabilities()


def test_engine_uses_what_is_declared_and_only_that(tmp_path):
    b = random_graph_bundle(tmp_path / "b", seed=2)
    x = np.zeros((1, 3, 8, 7), np.int16)
    declared, undeclared = _Declared(), _Undeclared()
    np.testing.assert_array_equal(Engine(b, declared).run(x), Engine(b, undeclared).run(x))
    assert declared.calls[0] == f"check {b.view.name}"
    # c1, c2 take the conv engine; strided/grouped c3, c4 and fc1, fc2 run ARM-side
    assert undeclared.calls == ["run_conv c1", "run_conv c2"]
    assert declared.calls[1:] == [
        "run_conv c1", "run_conv c2", "arm_conv c3", "arm_conv c4", "arm_conv fc1", "arm_conv fc2",
    ]  # fmt: skip


def test_a_backend_without_declarations_is_refused(tmp_path):
    class Bare:
        name = "bare"
        description = "nothing declared"

        def run_conv(self, x, spec):
            return conv_layer(x, spec)

    with pytest.raises(TypeError, match="backend 'bare' declares no capabilities"):
        Engine(random_bundle(tmp_path / "b", size=12, width=4), Bare())
