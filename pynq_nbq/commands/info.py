"""``nbq info``: the bundle, its layers and where each runs, the backend, the datapath."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from .. import opset
from ..cli import CommandError, add_backend_option


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a model bundle, backend and datapath")
    p.add_argument("--model", default=None, help="bundle directory or embedded model name")
    add_backend_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def describe(model) -> dict:
    """The model's bundle (its typed manifest), placements and backend, JSON-ready."""
    spec = model.spec
    layers = []
    for (name, op, where), layer in zip(model.engine.placements, spec.layers):
        row = {
            "name": name,
            "op": op,
            "placement": where,
            "out_shape": list(layer.out_shape),
            "frac": layer.out_frac,
        }
        attrs = [a.name for a in opset.get(op).attrs]
        for k in ("kernel", "stride", "padding", "relu", "pool"):
            if k in attrs:
                row[k] = getattr(layer, k)
        if layer.weighted:
            row["weight_bits"], row["acc_bits"] = layer.weight_bits, layer.acc_bits
        layers.append(row)
    return {
        "name": spec.name,
        "path": str(model.bundle.path),
        "datapath": spec.pe.value,
        "weight_bits": spec.weight_bits,
        "backend": model.backend_name,
        "engine": model.backend_description,
        "classes": list(spec.classes),
        "input": {**asdict(spec.input), "mean": list(spec.input.mean), "std": list(spec.input.std)},
        "arrays_sha256": model.bundle.sha256,
        "provenance": dict(spec.provenance),
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
