"""``nbq check --backend {native,csim,fpga}``: this backend gives numpy's logits, bit for bit.

    nbq check --backend native                       # 1,000 images, fmnist-svpe and -vpe
    nbq check --backend csim --images 200 --json csim.json
    nbq check --backend fpga --overlay sim --models fmnist-svpe
    nbq check --backend csim --define NBQ_CODE_BITS=3 --models fmnist-svpe

Exit status 1 if any logit differs, 2 on bad input.  See :mod:`pynq_nbq.bench.check`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli import CommandError


def register(sub) -> None:
    from ..bench.check import CHECKED, DEFAULT_MODELS
    from ..idx import FASHION_DIR

    p = sub.add_parser(
        "check",
        help="check a backend against the numpy reference on Fashion-MNIST (bit for bit)",
        description=(
            "Run the first --images Fashion-MNIST test images through each bundle on the "
            "backend and on numpy, compare every int16 logit, report accuracy and images/s "
            "(one JSON schema for every backend). Exit status 1 if any logit differs."
        ),
    )
    p.add_argument("--backend", required=True, choices=CHECKED, help="the backend to check")
    p.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="Fashion-MNIST bundles: embedded names or paths (default: %(default)s)",
    )
    p.add_argument("--images", type=int, default=1000, help="test images (default 1000)")
    p.add_argument("--batch", type=int, default=50, help="images per engine call (default 50)")
    p.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    p.add_argument("--data-dir", type=Path, default=FASHION_DIR, help="Fashion-MNIST folder")
    p.add_argument("--overlay", help="fpga: a bitstream directory or 'sim' (simulated board)")
    p.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NBQ_NAME=VALUE",
        help="csim: build the kernel with this -D override (e.g. NBQ_CODE_BITS=3); repeatable",
    )
    p.add_argument("--json", type=Path, help="also write the report here")
    p.set_defaults(func=run)


def backend_options(args: argparse.Namespace) -> dict:
    """``get_backend`` options from the arguments (csim ``defines``, fpga ``overlay``)."""
    if args.define and args.backend != "csim":
        raise CommandError("--define applies to --backend csim only")
    if args.overlay and args.backend != "fpga":
        raise CommandError("--overlay applies to --backend fpga only")
    defines = {}
    for d in args.define:
        name, sep, value = d.partition("=")
        if not sep or not name.startswith("NBQ_") or not value.lstrip("-").isdigit():
            raise CommandError(f"--define {d!r}: expected NBQ_NAME=INTEGER")
        defines[name] = int(value)
    out: dict = {"defines": defines} if defines else {}
    if args.overlay:
        out["overlay"] = args.overlay
    return out


def run(args: argparse.Namespace) -> int:
    from ..bench.check import check_backend, summary_line
    from ..errors import NbqError

    options = backend_options(args)
    try:
        report = check_backend(
            args.backend, args.models, args.images, args.batch, args.data_dir, args.threads,
            **options,
        )  # fmt: skip
    except (NbqError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    for r in report["results"]:
        print(summary_line(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print("all logits equal" if report["all_logits_equal"] else "LOGITS DIFFER")
    return 0 if report["all_logits_equal"] else 1
