"""``nbq classify IMG...``: label, confidence and timing of each image."""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import CommandError, add_backend_option


def register(sub) -> None:
    p = sub.add_parser("classify", help="classify image files with a model bundle")
    p.add_argument("images", nargs="*", help="image files (default: the bundled samples)")
    p.add_argument("--model", default=None, help="bundle directory or embedded model name")
    add_backend_option(p)
    p.add_argument("--top", type=int, default=1, help="show the top-k classes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for the numpy engine (default 1: steadiest for one image at a "
        "time; 0 keeps the library default)",
    )
    p.set_defaults(func=run)


def image_size(path: str) -> tuple[int, int] | None:
    """An image file's (width, height) from its header; None when it cannot be read."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def resize_note(path: str, spec: dict) -> tuple[list[int] | None, str | None]:
    """([width, height], a one-line note) when the image at ``path`` is not the model's input
    size (``spec``: the manifest's ``input``) and so is resized; (None, None) when it is."""
    size = image_size(path)
    want = (int(spec["width"]), int(spec["height"]))
    if size is None or tuple(size) == want:
        return None, None
    note = (
        f"note: {path}: a {size[0]}x{size[1]} image, resized ({spec['resize']}) to the "
        f"model's {want[0]}x{want[1]} input"
    )
    return list(size), note


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..blas import limit_blas_threads
    from ..errors import NbqError

    if args.top < 1:
        raise CommandError(f"--top must be >= 1, got {args.top}")
    limit_blas_threads(args.blas_threads)
    paths = args.images or [str(p) for p in api.sample_images()]
    if not paths:
        raise CommandError("no images given and no bundled samples found")
    try:
        model = api.load_model(args.model, args.backend)
    except (NbqError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    results = []
    for path in paths:
        try:
            pred = model.classify([path])
        except NbqError as exc:
            msg = str(exc)  # some errors already start with the path: name it once
            raise CommandError(msg if msg.startswith(f"{path}:") else f"{path}: {msg}") from exc
        result = {
            "image": path,
            "label": pred.labels[0],
            "index": int(pred.indices[0]),
            "confidence": float(pred.probabilities[0, pred.indices[0]]),
            "top": pred.top_k(0, args.top),
            "timings_ms": {k: round(v, 3) for k, v in pred.timings_ms.items()},
            "backend": pred.backend,
        }
        size, note = resize_note(path, model.input_spec)
        if note:  # said on stderr, and in the JSON as the size the image had
            print(note, file=sys.stderr)
            result["resized_from"] = size
        results.append(result)
    if args.json:
        print(
            json.dumps(
                {
                    "model": str(model.bundle.path),
                    "backend": model.backend_name,
                    "engine": model.backend_description,
                    "datapath": model.spec.pe.value,
                    "results": results,
                },
                indent=1,
            )
        )
        return 0
    print(
        f"model {model.spec.name} ({model.spec.pe.value}, "
        f"backend {model.backend_name}: {model.backend_description})"
    )
    for r in results:
        print(
            f"{r['image']}: {r['label']} ({100 * r['confidence']:.1f}%) "
            f"in {r['timings_ms']['total']:.2f} ms "
            f"(engine {r['timings_ms']['engine']:.2f} ms)"
        )
        if args.top > 1:
            print("   " + ", ".join(f"{lab} {100 * p:.1f}%" for lab, p in r["top"]))
    return 0
