"""Board descriptions: data in ``pynq_nbq/boards/<name>.json``, read into dataclasses.

A board file gives the programmable-logic resources, the array clock, the DDR the
engine streams from, the ARM cores that run the layers the engine cannot, and the
static power.  Every assumed figure carries a ``source`` string in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..kernel.design import fabric_clock_mhz
from .constants import URAM_BRAM18_EQUIV

#: The processing-system families a board file may name: Zynq UltraScale+ (PS8, as on
#: the ZCU102, ZCU104 and KV260) and Zynq-7000 (PS7, as on the PYNQ-Z2).
PS_FAMILIES = ("ps8", "ps7")


@dataclass(frozen=True)
class ArmCores:
    """The processing system's application cores, as the model sees them."""

    description: str
    cores: int
    clock_mhz: float
    int16_ops_per_cycle_per_core: float
    efficiency: float  #: fraction of the NEON peak a real kernel reaches (0..1]
    memory_bandwidth_gbps: float  #: streaming copy bandwidth for pool/add layers (GB/s)
    active_power_w: float  #: power above idle while the cores run a layer (W)

    @property
    def peak_gops(self) -> float:
        """NEON int16 peak of all cores (GOP/s, 1 MAC = 2 ops)."""
        return self.cores * self.clock_mhz * 1e-3 * self.int16_ops_per_cycle_per_core

    @property
    def gops(self) -> float:
        """Sustained int16 throughput assumed for conv/linear layers (GOP/s)."""
        return self.peak_gops * self.efficiency


@dataclass(frozen=True)
class Board:
    """One Zynq board (UltraScale+ PS8 or Zynq-7000 PS7): resources, clocks, memory,
    ARM cores, static power."""

    name: str
    title: str
    part: str
    dsp: int
    lut: int
    ff: int
    bram18: int
    uram: int
    pl_clock_mhz: float  #: clock of the conv arrays (MHz)
    ddr_data_rate_mts: float  #: DDR transfers per second (MT/s)
    ddr_bus_bits: int
    ddr_efficiency: float  #: usable fraction of the DDR peak (0..1]
    hp_ports: int  #: S_AXI_HP ports the engine uses
    hp_port_bits: int
    arm: ArmCores
    ps_static_w: float  #: processing-system power while idle (W)
    pl_static_w: float  #: programmable-logic static power (W)
    sources: dict[str, str]
    pl_bandwidth_override_gbps: float | None = None
    ps_family: str = "ps8"  #: "ps8" (Zynq UltraScale+) or "ps7" (Zynq-7000)
    pl_pll_mhz: float = 1500.0  #: the PS PLL the fabric clock is divided from (MHz)
    pl_clock_divisor: int = 8  #: fabric clock = pl_pll_mhz / pl_clock_divisor

    @property
    def kernel_clock_mhz(self) -> float:
        """The overlay's one PL clock on this board (MHz): the PS's PLL over an integer
        divisor, the clock the kernel's cycle model and the block design use."""
        return fabric_clock_mhz(self.pl_pll_mhz, self.pl_clock_divisor)

    @property
    def ddr_peak_gbps(self) -> float:
        """DDR peak bandwidth (GB/s = 1e9 bytes/s)."""
        return self.ddr_data_rate_mts * self.ddr_bus_bits / 8 / 1e3

    def hp_gbps(self, clock_mhz: float | None = None) -> float:
        """What the HP ports carry per direction at the array clock (GB/s)."""
        clock = self.pl_clock_mhz if clock_mhz is None else clock_mhz
        return self.hp_ports * self.hp_port_bits / 8 * clock / 1e3

    def pl_bandwidth_gbps(self, clock_mhz: float | None = None) -> float:
        """Bandwidth the engine gets to DDR, reads and writes together (GB/s).

        The smaller of the usable DDR bandwidth (peak x efficiency) and the HP
        ports' capacity, unless the board file sets ``pl_bandwidth_gbps`` itself.
        """
        if self.pl_bandwidth_override_gbps is not None:
            return self.pl_bandwidth_override_gbps
        return min(self.ddr_peak_gbps * self.ddr_efficiency, self.hp_gbps(clock_mhz))

    @property
    def static_w(self) -> float:
        """Static + idle processing-system power, always drawn (W)."""
        return self.ps_static_w + self.pl_static_w

    @property
    def bram18_capacity(self) -> int:
        """Block-RAM capacity in BRAM18 equivalents, UltraRAM included."""
        return self.bram18 + URAM_BRAM18_EQUIV * self.uram

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary with units in the keys."""
        return {
            "name": self.name,
            "part": self.part,
            "dsp": self.dsp,
            "lut": self.lut,
            "ff": self.ff,
            "bram18": self.bram18,
            "uram": self.uram,
            "pl_clock_mhz": self.pl_clock_mhz,
            "ps_family": self.ps_family,
            "kernel_clock_mhz": round(self.kernel_clock_mhz, 3),
            "ddr_peak_gbps": round(self.ddr_peak_gbps, 3),
            "pl_bandwidth_gbps": round(self.pl_bandwidth_gbps(), 3),
            "arm": self.arm.description,
            "arm_gops": round(self.arm.gops, 3),
            "static_power_w": round(self.static_w, 3),
        }


def available_boards() -> list[str]:
    """Names of the boards shipped in ``pynq_nbq/boards``."""
    folder = resources.files("pynq_nbq").joinpath("boards")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_board(name_or_path: str | Path | Board) -> Board:
    """Load a board by name (``zcu102``, ``zcu104``, ``kv260``, ``pynq-z2``) or a JSON file path.

    Raises ``ValueError`` naming the unknown board or the missing/invalid field.
    """
    if isinstance(name_or_path, Board):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ValueError(f"board file {text!r} does not exist")
        origin = str(path)
        raw = path.read_text(encoding="utf-8")
    else:
        key = text.strip().lower()
        known = available_boards()
        if key not in known:
            raise ValueError(f"unknown board {text!r}: known boards are {', '.join(known)}")
        origin = f"pynq_nbq/boards/{key}.json"
        raw = (
            resources.files("pynq_nbq")
            .joinpath("boards")
            .joinpath(f"{key}.json")
            .read_text("utf-8")
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"board file {origin}: not valid JSON ({exc})") from exc
    return board_from_dict(data, origin)


def _get(data: dict[str, Any], key: str, origin: str, kind: type = float) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ValueError(f"board file {origin}: missing field {key!r}")
    value = data[key]
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"board file {origin}: field {key!r} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"board file {origin}: field {key!r} must be a number, got {value!r}")
    if value < 0 or (kind is int and int(value) != value):
        raise ValueError(
            f"board file {origin}: field {key!r} must be a non-negative {kind.__name__}"
        )
    return kind(value)


def _section(data: Any, name: str, origin: str) -> dict[str, Any]:
    """The object ``data[name]`` of a board file; ValueError naming it when missing."""
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, dict):
        raise ValueError(f"board file {origin}: missing section {name!r}")
    return value


def board_from_dict(data: dict[str, Any], origin: str = "<dict>") -> Board:
    """Build a :class:`Board` from the JSON structure of ``pynq_nbq/boards/*.json``."""
    res = _section(data, "resources", origin)
    mem = _section(data, "memory", origin)
    arm = _section(data, "arm", origin)
    power = _section(data, "power", origin)
    cores = ArmCores(
        description=_get(arm, "description", origin, str),
        cores=_get(arm, "cores", origin, int),
        clock_mhz=_get(arm, "clock_mhz", origin),
        int16_ops_per_cycle_per_core=_get(arm, "int16_ops_per_cycle_per_core", origin),
        efficiency=_get(arm, "efficiency", origin),
        memory_bandwidth_gbps=_get(arm, "memory_bandwidth_gbps", origin),
        active_power_w=_get(arm, "active_power_w", origin),
    )
    override = mem.get("pl_bandwidth_gbps")
    ps = _section(data, "ps", origin)
    family = _get(ps, "family", origin, str)
    if family not in PS_FAMILIES:
        raise ValueError(
            f"board file {origin}: ps family {family!r} is not one of {', '.join(PS_FAMILIES)}"
        )
    board = Board(
        name=_get(data, "name", origin, str),
        title=str(data.get("title", data.get("name", ""))),
        part=_get(data, "part", origin, str),
        dsp=_get(res, "dsp", origin, int),
        lut=_get(res, "lut", origin, int),
        ff=_get(res, "ff", origin, int),
        bram18=_get(res, "bram18", origin, int),
        uram=_get(res, "uram", origin, int) if "uram" in res else 0,
        pl_clock_mhz=_get(data, "pl_clock_mhz", origin),
        ddr_data_rate_mts=_get(mem, "data_rate_mts", origin),
        ddr_bus_bits=_get(mem, "bus_bits", origin, int),
        ddr_efficiency=_get(mem, "efficiency", origin),
        hp_ports=_get(mem, "hp_ports", origin, int),
        hp_port_bits=_get(mem, "hp_port_bits", origin, int),
        arm=cores,
        ps_static_w=_get(power, "ps_static_w", origin),
        pl_static_w=_get(power, "pl_static_w", origin),
        sources={
            k: str(v.get("source", ""))
            for k, v in (
                ("resources", res),
                ("memory", mem),
                ("arm", arm),
                ("power", power),
                ("ps", ps),
            )
        },
        pl_bandwidth_override_gbps=None if override is None else float(override),
        ps_family=family,
        pl_pll_mhz=_get(ps, "pl_pll_mhz", origin),
        pl_clock_divisor=_get(ps, "pl_clock_divisor", origin, int),
    )
    for field in ("dsp", "lut", "ff", "pl_clock_mhz", "pl_pll_mhz", "pl_clock_divisor"):
        if getattr(board, field) <= 0:
            raise ValueError(f"board file {origin}: field {field!r} must be positive")
    if not 0 < board.ddr_efficiency <= 1 or not 0 < cores.efficiency <= 1:
        raise ValueError(f"board file {origin}: efficiencies must lie in (0, 1]")
    return board
