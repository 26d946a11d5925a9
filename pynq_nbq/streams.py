"""Compatibility names: the host side of the kernel now lives in :mod:`pynq_nbq.kernel`.

``pynq_nbq.kernel.protocol`` (registers, flags, status word), ``.packing``
(words), ``.checks`` (check before use), ``.tiles`` (the planner), ``.scheduler``
(drives a ``ConvDevice``), ``.header`` (``nbq_params.h`` / Vitis header); the numpy
model of a call and the vector writer are test code in :mod:`pynq_nbq.sim`.
New code imports those modules; this one only re-exports their names.
"""

from __future__ import annotations

from .kernel.checks import *  # noqa: F403
from .kernel.checks import check_manifest, conv_weights_for  # noqa: F401
from .kernel.header import *  # noqa: F403
from .kernel.header import check_vitis_header, main, parse_params_header  # noqa: F401
from .kernel.packing import *  # noqa: F403
from .kernel.protocol import *  # noqa: F403
from .kernel.scheduler import *  # noqa: F403
from .kernel.tiles import *  # noqa: F403


def __getattr__(name: str):
    """Test-side names (``ReferenceDevice``, ``RecordingDevice``, ``write_vectors``...)."""
    from .sim import reference, vectors

    for mod in (reference, vectors):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module 'pynq_nbq.streams' has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
