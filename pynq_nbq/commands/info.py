"""``nbq info``: the bundle, its layers and where each runs, the backend, the datapath."""

from __future__ import annotations

import argparse
import json

from ..cli import CommandError


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a model bundle, backend and datapath")
    p.add_argument("--model", default=None, help="bundle directory or embedded model name")
    p.add_argument(
        "--backend",
        default="auto",
        help="auto (default: native if its C kernel builds, else numpy), numpy, native, "
        "csim or fpga",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def describe(model) -> dict:
    m = model.bundle.manifest
    layers = []
    for (name, op, where), layer in zip(model.engine.placements, m["layers"]):
        row = {
            "name": name,
            "op": op,
            "placement": where,
            "out_shape": m["tensors"][layer["output"]]["shape"],
            "frac": m["tensors"][layer["output"]]["frac"],
        }
        for k in ("kernel", "stride", "padding", "relu", "pool", "weight_bits", "acc_bits"):
            if k in layer:
                row[k] = layer[k]
        layers.append(row)
    return {
        "name": m["name"],
        "path": str(model.bundle.path),
        "datapath": m["datapath"],
        "weight_bits": m["weight_bits"],
        "backend": model.backend_name,
        "engine": model.backend_description,
        "classes": m["classes"],
        "input": m["input"],
        "arrays_sha256": m["arrays_sha256"],
        "provenance": m.get("provenance", {}),
        "layers": layers,
    }


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..errors import NbqError

    try:
        model = api.load_model(args.model, args.backend)
    except (NbqError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    d = describe(model)
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    inp = d["input"]
    print(f"model     {d['name']}  ({d['path']})")
    print(f"datapath  {d['datapath']}, {d['weight_bits']}-bit weights; backend {d['backend']}")
    print(f"engine    {d['engine']}")
    print(
        f"input     {inp['channels']}x{inp['height']}x{inp['width']} {inp['mode']}; "
        f"{len(d['classes'])} classes: {', '.join(d['classes'])}"
    )
    print(f"arrays    sha256 {d['arrays_sha256']}")
    print(f"{'layer':22s} {'op':8s} {'runs on':12s} {'out shape':16s} frac acc")
    for r in d["layers"]:
        print(
            f"{r['name']:22s} {r['op']:8s} {r['placement']:12s} {str(r['out_shape']):16s} "
            f"{r['frac']:4d} {r.get('acc_bits', '')}"
        )
    return 0
