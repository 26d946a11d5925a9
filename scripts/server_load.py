"""Load generator for ``nbq serve``: the server in its own process, the client here.

Used by ``scripts/bench_server.py`` (the full run) and ``tests/test_server_load.py``,
``tests/test_server_hardening.py`` (CI-sized runs).  Only talks to 127.0.0.1.  Not part
of the installed package: a load generator has no place on the board.

    with spawn_server(model_dir) as srv:
        records = run_load(srv.url, payloads, n_requests=2000, concurrency=8)
    summary = summarize(records, offline_answers(model_dir, payloads), srv)
"""

from __future__ import annotations

import http.client
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pynq_nbq.server.memory import rss_bytes


@dataclass
class ServerProcess:
    """A running ``nbq serve`` child process."""

    proc: subprocess.Popen
    url: str
    log_path: Path
    banner: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (bytes; Linux /proc), or None."""
        return rss_bytes(self.proc.pid)

    def peak_rss_bytes(self) -> int | None:
        """Peak resident memory (VmHWM) of the server process so far (bytes), or None."""
        return rss_bytes(self.proc.pid, "VmHWM")


@contextmanager
def spawn_server(
    model: str | os.PathLike | None,
    *args: str,
    start_timeout_s: float = 60.0,
    root: str | os.PathLike | None = None,
):
    """Start ``python -m pynq_nbq.cli serve --port 0 --model MODEL ARGS`` on 127.0.0.1,
    wait for its URL, yield a :class:`ServerProcess`, and stop it (SIGINT, then kill).
    ``root``: the checkout whose ``pynq_nbq`` the server runs (default: this one; another
    checkout gives a before/after comparison)."""
    cmd = [sys.executable, "-m", "pynq_nbq.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
    if model is not None:
        cmd += ["--model", str(model)]
    cmd += list(args)
    log = tempfile.NamedTemporaryFile("w+", prefix="nbq-serve-", suffix=".log", delete=False)
    env = dict(os.environ)
    root = str(root or Path(__file__).resolve().parents[1])  # the pynq_nbq the child imports
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=root)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:  # reads stdout so the child never blocks on a full pipe
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    banner: list[str] = []
    url = None
    deadline = time.monotonic() + start_timeout_s
    try:
        while url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"nbq serve did not start within {start_timeout_s} s") from None
            if line is None:
                log.seek(0)
                raise RuntimeError(f"nbq serve exited ({proc.wait()}): {log.read()[-2000:]}")
            banner.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                url = m.group(1)
        for _ in range(2):  # the model/power line and the curl hint follow at once
            try:
                nxt = lines.get(timeout=5)
            except queue.Empty:
                break
            if nxt is not None:
                banner.append(nxt)
        yield ServerProcess(proc, url, Path(log.name), banner)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def sample_payloads(n: int = 12, seed: int = 0) -> list[tuple[str, bytes]]:
    """(name, bytes) of the package's sample images, else ``n`` generated PNG/JPEG images."""
    from PIL import Image

    from pynq_nbq.api import sample_images

    found = sample_images()
    if found:
        return [(p.name, p.read_bytes()) for p in found]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 3 == 2:
            img = Image.fromarray(rng.integers(0, 256, (40, 32, 3), dtype=np.uint8), "RGB")
            fmt, ext = "JPEG", "jpg"
        else:
            a = np.zeros((28, 28), np.uint8)
            a[4 + i % 8 : 22, 6 : 20 + i % 6] = rng.integers(80, 256)
            img, fmt, ext = Image.fromarray(a, "L"), "PNG", "png"
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append((f"gen{i:02d}.{ext}", buf.getvalue()))
    return out


def offline_answers(model: str | os.PathLike | None, payloads: list[tuple[str, bytes]]) -> list:
    """The offline engine's (index, probabilities) for each payload, for comparison."""
    from pynq_nbq.api import load_model

    m = load_model(model)
    out = []
    for _, data in payloads:
        p = m.classify([data])
        out.append((int(p.indices[0]), [float(v) for v in p.probabilities[0]]))
    return out


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    raw = resp.read()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, {"error": raw[:200].decode("latin-1")}


def run_load(
    url: str,
    payloads: list[tuple[str, bytes]],
    n_requests: int,
    concurrency: int,
    top_k: int = 100,
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """POST ``n_requests`` images (payloads in turn) with ``concurrency`` keep-alive
    connections; one record per request (status, client latency in ms, the answer)."""
    parts = urlsplit(url)
    path = f"/v1/classify?top_k={top_k}"
    counter = iter(range(n_requests))
    lock = threading.Lock()
    records: list[dict[str, Any]] = []

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                k = i % len(payloads)
                t0 = time.perf_counter()
                try:
                    status, body = _post(conn, path, payloads[k][1])
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
                    status, body = -1, {"error": f"{type(exc).__name__}: {exc}"}
                latency = 1e3 * (time.perf_counter() - t0)
                with lock:
                    records.append(
                        {
                            "i": i,
                            "payload": k,
                            "status": status,
                            "latency_ms": latency,
                            "body": body,
                        }
                    )
        finally:
            conn.close()

    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    return sorted(records, key=lambda r: r["i"])


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def summarize(
    records: list[dict[str, Any]], offline: list, wall_s: float | None = None
) -> dict[str, Any]:
    """Errors, mismatches against ``offline``, and p50/p99 of latency and overhead (ms).

    ``overhead_ms`` = server ``total`` - ``engine`` (includes waiting for the device);
    ``overhead_excl_queue_ms`` also subtracts the ``queue`` wait."""
    ok = [r for r in records if r["status"] == 200]
    errors = [r for r in records if r["status"] != 200]
    mismatches = []
    for r in ok:
        idx, probs = offline[r["payload"]]
        got = {t["index"]: t["probability"] for t in r["body"]["top_k"]}
        want = {i: p for i, p in enumerate(probs) if i in got}
        if r["body"]["index"] != idx or got != want or len(got) != len(probs):
            mismatches.append(r["i"])
    t = [r["body"]["timings_ms"] for r in ok]
    total = [x["total"] for x in t]
    engine = [x["engine"] for x in t]
    over = [x["total"] - x["engine"] for x in t]
    over_nq = [x["total"] - x["engine"] - x["queue"] for x in t]
    lat = [r["latency_ms"] for r in ok]
    from pynq_nbq.server.service import TOTAL_PARTS

    # how far the parts of each answer are from its total (issue 22: must be within 5 %)
    gap = [abs(sum(x[k] for k in TOTAL_PARTS) - x["total"]) / x["total"] for x in t if x["total"]]
    out: dict[str, Any] = {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(errors),
        "error_examples": [(r["status"], r["body"].get("error")) for r in errors[:3]],
        "mismatches": len(mismatches),
        "client_latency_p50_ms": _pct(lat, 50),
        "client_latency_p99_ms": _pct(lat, 99),
        "server_total_p50_ms": _pct(total, 50),
        "server_total_p99_ms": _pct(total, 99),
        "engine_p50_ms": _pct(engine, 50),
        "engine_p99_ms": _pct(engine, 99),
        "decode_p50_ms": _pct([x["decode"] for x in t], 50),
        "preprocess_p50_ms": _pct([x["preprocess"] for x in t], 50),
        "queue_p50_ms": _pct([x["queue"] for x in t], 50),
        "queue_p99_ms": _pct([x["queue"] for x in t], 99),
        "overhead_p50_ms": _pct(over, 50),
        "overhead_p99_ms": _pct(over, 99),
        "overhead_excl_queue_p50_ms": _pct(over_nq, 50),
        "overhead_excl_queue_p99_ms": _pct(over_nq, 99),
        "parts_vs_total_worst": round(max(gap), 6) if gap else None,
    }
    if wall_s:
        out["wall_s"] = round(wall_s, 3)
        out["throughput_rps"] = round(len(records) / wall_s, 1)
    return out


def fetch(url: str, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """GET ``path`` from the server at ``url``: (status, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def bench(
    model: str | os.PathLike | None,
    n_requests: int = 2000,
    concurrency: int = 8,
    sequential: int = 200,
    warmup: int = 50,
    backend: str = "numpy",
) -> dict[str, Any]:
    """The whole benchmark: spawn the server, warm up, measure memory, run the load at
    ``concurrency`` and a ``sequential`` pass at concurrency 1, scrape /metrics."""
    payloads = sample_payloads()
    offline = offline_answers(model, payloads)
    with spawn_server(model, "--backend", backend, "--power", "off") as srv:
        run_load(srv.url, payloads, warmup, concurrency)
        rss0 = srv.rss_bytes()
        t0 = time.perf_counter()
        records = run_load(srv.url, payloads, n_requests, concurrency)
        wall = time.perf_counter() - t0
        rss1 = srv.rss_bytes()
        seq = run_load(srv.url, payloads, sequential, 1) if sequential else []
        status, metrics_text = fetch(srv.url, "/metrics")
        banner = srv.banner
    result = {
        "model": str(model) if model is not None else "(embedded default)",
        "backend": backend,
        "concurrency": concurrency,
        "payloads": len(payloads),
        "server": banner[:2],
        "load": summarize(records, offline, wall),
        "sequential": summarize(seq, offline) if seq else None,
        "rss_before_mb": round(rss0 / 2**20, 2) if rss0 else None,
        "rss_after_mb": round(rss1 / 2**20, 2) if rss1 else None,
        "rss_growth_mb": round((rss1 - rss0) / 2**20, 2) if rss0 and rss1 else None,
        "metrics_status": status,
        "metrics_text": metrics_text.decode("utf-8"),
    }
    return result


# --- memory and overload -----------------------------------------------------------------
def big_images(side: int = 6000) -> dict[str, bytes]:
    """``side`` x ``side`` images (36 Mpx at 6000) that compress to small files, one per
    decoding path that costs memory differently: RGBA PNG (4 bytes/px, premultiplied for
    reducing), 16-bit grey PNG (converted before reducing), palette PNG (converted to
    RGBA before reducing), RGB JPEG (decoded at 1/8 scale by the decoder)."""
    from PIL import Image

    idx = np.arange(side, dtype=np.int32)
    ramp = ((idx[:, None] + idx[None, :]) * 255 // (2 * side)).astype(np.uint8)
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[side // 6 : 5 * side // 6, side // 3 : 2 * side // 3, 0] = 200
    images = {
        "rgba.png": (Image.fromarray(rgba, "RGBA"), "PNG"),
        "gray16.png": (Image.fromarray(ramp.astype(np.uint16) * 257), "PNG"),
        "palette.png": (_palette(rgba[..., 0] // 100), "PNG"),
        "rgb.jpg": (Image.fromarray(np.dstack([ramp, ramp, 255 - ramp]), "RGB"), "JPEG"),
    }
    del rgba
    out = {}
    for name, (img, fmt) in images.items():
        buf = io.BytesIO()
        img.save(buf, fmt)
        out[name] = buf.getvalue()
    return out


def _palette(indices: np.ndarray):
    """A "P" image of ``indices`` with a 3-colour palette."""
    from PIL import Image

    img = Image.fromarray(indices.astype(np.uint8), "P")
    img.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30])
    return img


def _mb(n: int | None) -> float | None:
    return round(n / 2**20, 1) if n else None


def memory_bench(
    model: str | os.PathLike | None,
    sequential: int = 16,
    concurrent: int = 6,
    side: int = 6000,
    root: str | os.PathLike | None = None,
    settle_s: float = 1.0,
) -> dict[str, Any]:
    """Server RSS around ``sequential`` requests cycling through :func:`big_images`, then
    ``concurrent`` (all at once) with the RGBA PNG (the costliest): baseline (after a
    small warm-up), after the sequential ones, the peak (VmHWM) and the steady RSS
    ``settle_s`` after the last answer (MB)."""
    images = big_images(side)
    mixed = list(images.items())
    payload = [("rgba.png", images["rgba.png"])]
    small = sample_payloads()[:1]
    args = ("--power", "off", "--deadline-s", "120", "--max-queue", str(max(8, concurrent)))
    with spawn_server(model, *args, root=root) as srv:
        run_load(srv.url, small, 20, 1)
        base = srv.rss_bytes()
        t0 = time.perf_counter()
        seq = run_load(srv.url, mixed, sequential, 1, timeout_s=300)
        t_seq = time.perf_counter() - t0
        after_seq = srv.rss_bytes()
        t0 = time.perf_counter()
        conc = run_load(srv.url, payload, concurrent, concurrent, timeout_s=300)
        t_conc = time.perf_counter() - t0
        time.sleep(settle_s)
        steady = srv.rss_bytes()
        peak = srv.peak_rss_bytes()
        banner = srv.banner
    statuses = sorted({r["status"] for r in seq + conc})
    return {
        "images": {k: f"{side}x{side}, {len(v)} bytes" for k, v in images.items()},
        "server": banner[:2],
        "sequential": sequential,
        "concurrent": concurrent,
        "statuses": statuses,
        "errors": sum(r["status"] != 200 for r in seq + conc),
        "rss_baseline_mb": _mb(base),
        "rss_after_sequential_mb": _mb(after_seq),
        "rss_peak_mb": _mb(peak),
        "rss_steady_mb": _mb(steady),
        "sequential_s": round(t_seq, 2),
        "concurrent_s": round(t_conc, 2),
    }


def photo_payloads(n: int = 4, size: tuple[int, int] = (1024, 768)) -> list[tuple[str, bytes]]:
    """``n`` camera-sized RGB JPEGs (smooth gradients plus noise, quality 90): what a
    phone or a web page sends, where decoding costs more than the inference."""
    from PIL import Image

    rng = np.random.default_rng(1)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 2 + 40 * i) % 256, (xx + yy) % 256], 2)
        a = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a, "RGB").save(buf, "JPEG", quality=90)
        out.append((f"photo{i}.jpg", buf.getvalue()))
    return out


def overload_bench(
    model: str | os.PathLike | None,
    n_requests: int = 1000,
    concurrencies: tuple[int, ...] = (8, 64),
    root: str | os.PathLike | None = None,
    photos: bool = False,
) -> dict[int, dict[str, Any]]:
    """Goodput (answers 200 per second) and refusals at each concurrency, one server with
    the default queue (8 waiting): overload should cost refusals, not goodput.
    ``photos``: send :func:`photo_payloads` instead of the 28 x 28 samples."""
    payloads = photo_payloads() if photos else sample_payloads()
    out = {}
    with spawn_server(model, "--power", "off", root=root) as srv:
        run_load(srv.url, payloads, 40, 4)
        for c in concurrencies:
            t0 = time.perf_counter()
            recs = run_load(srv.url, payloads, n_requests, c)
            wall = time.perf_counter() - t0
            ok = sum(r["status"] == 200 for r in recs)
            out[c] = {
                "requests": len(recs),
                "ok": ok,
                "refused_503": sum(r["status"] == 503 for r in recs),
                "other": sum(r["status"] not in (200, 503) for r in recs),
                "wall_s": round(wall, 2),
                "goodput_rps": round(ok / wall, 1),
            }
    return out


# --- issue 22: attacks ----------------------------------------------------------------------
def _reset_peak(pid: int) -> bool:
    """Reset the peak RSS (VmHWM) of our own child ``pid`` (Linux clear_refs "5")."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _probe(url: str, body: bytes, timeout_s: float = 10.0) -> tuple[int, float]:
    """One normal classification on a fresh connection: (status, seconds)."""
    parts = urlsplit(url)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        status, _ = _post(conn, "/v1/classify", body)
    except (OSError, http.client.HTTPException):
        status = -1
    finally:
        conn.close()
    return status, time.perf_counter() - t0


def image_attack_bench(
    model: str | os.PathLike | None,
    classes: list[str] | None = None,
    scale: float = 1.0,
    concurrency: int = 9,
    rounds: int = 2,
    settle_s: float = 1.0,
    server_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Peak RSS (VmHWM, reset before each class) of one ``nbq serve`` process with its
    default limits while ``concurrency`` clients send ``rounds`` x ``concurrency``
    requests of each attack class of ``scripts/attack_payloads.py`` at ``scale``; the RSS
    ``settle_s`` after each class, the statuses, and a normal probe's latency after it.
    ``server_args``: extra ``nbq serve`` options (e.g. a longer ``--deadline-s``, so that
    every decode runs to the end: the worst case for memory)."""
    from scripts import attack_payloads as ap

    names = classes or list(ap.IMAGE_CLASSES)
    bodies = {n: ap.IMAGE_CLASSES[n](scale) for n in names}
    small = sample_payloads()[0][1]
    out: dict[str, Any] = {"scale": scale, "concurrency": concurrency, "classes": {}}
    with spawn_server(model, "--power", "off", *server_args) as srv:
        run_load(srv.url, [("small", small)], 20, 1)
        out["server"] = srv.banner[:2]
        out["rss_idle_mb"] = _mb(srv.rss_bytes())
        for name in names:
            _reset_peak(srv.pid)
            before = srv.rss_bytes()
            t0 = time.perf_counter()
            recs = run_load(
                srv.url, [(name, bodies[name])], rounds * concurrency, concurrency, timeout_s=120
            )
            took = time.perf_counter() - t0
            peak = srv.peak_rss_bytes()
            time.sleep(settle_s)
            status, probe_s = _probe(srv.url, small)
            errors = sorted(
                {str(r["body"].get("error", ""))[:90] for r in recs if r["status"] != 200}
            )
            out["classes"][name] = {
                "body_bytes": len(bodies[name]),
                "statuses": {
                    str(s): sum(r["status"] == s for r in recs) for s in {r["status"] for r in recs}
                },
                "errors": errors[:3],
                "rss_before_mb": _mb(before),
                "rss_peak_mb": _mb(peak),
                "rss_after_mb": _mb(srv.rss_bytes()),
                "wall_s": round(took, 2),
                "probe_after": {"status": status, "ms": round(1e3 * probe_s, 1)},
            }
    return out


def slow_reader_bench(
    model: str | os.PathLike | None,
    connections: int = 100,
    pipelined: int = 200,
    duration_s: float = 10.0,
    trickle: bool = False,
) -> dict[str, Any]:
    """``connections`` sockets that each send one packet of ``pipelined`` GET /metrics and
    then never read (``trickle``: read 64 bytes a second), for ``duration_s``, while a
    normal client probes every 0.5 s: probes answered, their worst latency, the server's
    CPU seconds per second and its peak RSS."""
    import socket

    from scripts.attack_payloads import pipelined_gets

    small = sample_payloads()[0][1]
    packet = pipelined_gets(pipelined)
    with spawn_server(model, "--power", "off") as srv:
        run_load(srv.url, [("small", small)], 20, 1)
        parts = urlsplit(srv.url)
        _reset_peak(srv.pid)
        idle_rss = srv.rss_bytes()
        socks = []
        for _ in range(connections):
            s = socket.create_connection((parts.hostname, parts.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(packet)
            socks.append(s)
        cpu0, t0 = _cpu_s(srv.pid), time.monotonic()
        probes = []
        while time.monotonic() - t0 < duration_s:
            probes.append(_probe(srv.url, small, timeout_s=5))
            if trickle:
                for s in socks:
                    try:
                        s.setblocking(False)
                        s.recv(64)
                    except OSError:
                        pass
            time.sleep(0.5)
        cpu1, t1 = _cpu_s(srv.pid), time.monotonic()
        for s in socks:
            s.close()
        peak = srv.peak_rss_bytes()
    ok = [dt for st, dt in probes if st == 200]
    return {
        "connections": connections,
        "pipelined": pipelined,
        "reader": "64 B/s" if trickle else "never reads",
        "probes": len(probes),
        "probes_answered": len(ok),
        "probe_worst_ms": round(1e3 * max(ok), 1) if ok else None,
        "server_cpu_s_per_s": round((cpu1 - cpu0) / (t1 - t0), 3) if cpu0 is not None else None,
        "rss_idle_mb": _mb(idle_rss),
        "rss_peak_mb": _mb(peak),
    }


def bundle_attack_bench(model_dir: str | os.PathLike, bomb_mb: int = 1500) -> dict[str, Any]:
    """Peak RSS and time of ``POST /v1/model`` for each hostile bundle of
    ``attack_payloads.hostile_bundles`` (``model_dir``: the template bundle)."""
    import shutil

    from scripts.attack_payloads import hostile_bundles

    tmp = Path(tempfile.mkdtemp(prefix="nbq-hostile-"))
    try:
        models = tmp / "models"
        models.mkdir()
        shutil.copytree(model_dir, models / "good")
        made = hostile_bundles(models, models / "good", bomb_mb)
        out: dict[str, Any] = {"bundles": {}}
        env_token = "bench-token"
        args = ("--power", "off", "--models-dir", str(models), "--token", env_token)
        with spawn_server(models / "good", *args) as srv:
            parts = urlsplit(srv.url)
            out["rss_idle_mb"] = _mb(srv.rss_bytes())
            for name, what in made.items():
                _reset_peak(srv.pid)
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                t0 = time.perf_counter()
                try:
                    conn.request(
                        "POST",
                        "/v1/model",
                        body=json.dumps({"name": name}),
                        headers={
                            "Content-Type": "application/json",
                            "Authorization": f"Bearer {env_token}",
                        },
                    )
                    resp = conn.getresponse()
                    status, body = resp.status, json.loads(resp.read() or b"{}")
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    status, body = -1, {"error": repr(exc)}
                finally:
                    conn.close()
                out["bundles"][name] = {
                    "what": what,
                    "status": status,
                    "error": str(body.get("error", ""))[:160],
                    "ms": round(1e3 * (time.perf_counter() - t0), 1),
                    "rss_peak_mb": _mb(srv.peak_rss_bytes()),
                    "absolute_path_shown": str(models) in str(body),
                }
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
