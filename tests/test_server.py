"""``nbq serve``: every endpoint and error through Flask's test client, the device
worker (queue bound, deadlines), power sampling and its ZCU102 label file, metrics.

Models: the embedded default when it is there, else a random bundle; model swaps use
random bundles in a temporary models directory.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from server_support import GatedBackend, app_factory, wait_for

from pynq_nbq import api, cli
from pynq_nbq import rails as pw
from pynq_nbq.backends import get_backend
from pynq_nbq.server import ServerConfig, create_app, is_loopback
from pynq_nbq.testing import random_bundle

prom_parser = pytest.importorskip("prometheus_client.parser")


# --- fixtures and helpers -----------------------------------------------------------
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models directory with two random bundles and one broken one."""
    root = tmp_path_factory.mktemp("models")
    random_bundle(root / "rand-svpe", "svpe", n_bits=3, seed=1)
    random_bundle(root / "rand-vpe", "vpe", seed=2)
    random_bundle(root / "rand-rgb", "svpe", seed=3, channels=3, size=32)
    shutil.copytree(root / "rand-svpe", root / "broken")
    m = json.loads((root / "broken" / "manifest.json").read_text())
    m["arrays_sha256"] = "0" * 64
    (root / "broken" / "manifest.json").write_text(json.dumps(m))
    return root


@pytest.fixture(scope="module")
def initial_model(models_dir) -> str:
    """The embedded default if it exists, else the random svpe bundle."""
    if api.DEFAULT_MODEL in api.embedded_models():
        return str(api.model_path(None))
    return str(models_dir / "rand-svpe")


@pytest.fixture(scope="module")
def offline(initial_model):
    return api.load_model(initial_model)


@pytest.fixture(scope="module")
def app(models_dir, initial_model):
    a = create_app(
        ServerConfig(model=initial_model, models_dir=models_dir, power="off", max_body_bytes=2**20)
    )
    yield a
    a.extensions["nbq"].close()


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def make_app(models_dir):
    """Factory for apps with their own settings (closed after the test)."""
    yield from app_factory(models_dir)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gray(w: int = 28, h: int = 28, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w), np.uint8)
    r, c = slice(h // 5, 4 * h // 5), slice(w // 4, 3 * w // 4)
    a[r, c] = rng.integers(60, 256, a[r, c].shape)
    return a


def png_with_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header declares ``width`` x ``height``."""
    raw = encode(Image.fromarray(gray(8, 8), "L"), "PNG")
    ihdr = bytearray(raw[16:29])  # IHDR data: width, height, depth, colour, ...
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return raw[:16] + bytes(ihdr) + crc + raw[33:]


def assert_json_error(resp, status: int, *words: str) -> dict:
    assert resp.status_code == status, resp.data[:300]
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["status"] == status
    assert "Traceback" not in body["error"]
    for w in words:
        assert w.lower() in body["error"].lower(), body["error"]
    return body


def assert_still_serving(client) -> None:
    assert client.get("/v1/health").status_code == 200
    r = client.post("/v1/classify", data=encode(Image.fromarray(gray(), "L"), "PNG"))
    assert r.status_code == 200, r.data[:300]


def offline_answer(model: api.Model, data: bytes) -> tuple[int, list[float]]:
    p = model.classify([data])
    return int(p.indices[0]), [float(v) for v in p.probabilities[0]]


# --- valid images, all modes ---------------------------------------------------------
def _valid_images() -> dict[str, bytes]:
    g = gray(28, 28, 1)
    rgb = np.stack([g, np.roll(g, 3, 1), 255 - g], axis=2)
    rgba = np.dstack([rgb, np.where(g > 0, 255, 0).astype(np.uint8)])
    big16 = (gray(40, 30, 2).astype(np.uint16) * 257).astype(np.uint16)
    return {
        "L.png": encode(Image.fromarray(g, "L"), "PNG"),
        "RGB.jpg": encode(Image.fromarray(rgb, "RGB").resize((64, 48)), "JPEG", quality=90),
        "P.png": encode(Image.fromarray(rgb, "RGB").convert("P", palette=Image.ADAPTIVE), "PNG"),
        "I16.png": encode(Image.fromarray(big16), "PNG"),
        "CMYK.jpg": encode(Image.fromarray(rgb, "RGB").convert("CMYK"), "JPEG"),
        "RGBA.png": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "LA.png": encode(Image.fromarray(rgba, "RGBA").convert("LA"), "PNG"),
        "1.bmp": encode(Image.fromarray(g, "L").convert("1"), "BMP"),
        "P.gif": encode(Image.fromarray(g, "L").convert("P"), "GIF"),
        "F.tiff": encode(Image.fromarray(g.astype(np.float32) / 7.0, "F"), "TIFF"),
    }


VALID = _valid_images()


@pytest.mark.parametrize("name", sorted(VALID))
def test_classify_modes_match_offline_engine(client, offline, name):
    data = VALID[name]
    r = client.post("/v1/classify?top_k=100", data=data, content_type="application/octet-stream")
    assert r.status_code == 200, r.data[:300]
    body = r.get_json()
    idx, probs = offline_answer(offline, data)
    assert body["index"] == idx
    assert body["label"] == offline.classes[idx]
    assert {t["index"]: t["probability"] for t in body["top_k"]} == dict(enumerate(probs))
    assert body["image"]["width"] > 0


def test_classify_answer_fields(client, offline):
    data = VALID["L.png"]
    r = client.post("/v1/classify", data={"image": (io.BytesIO(data), "shoe.png")})
    assert r.status_code == 200
    b = r.get_json()
    assert len(b["top_k"]) == min(3, len(offline.classes))
    probs = [t["probability"] for t in b["top_k"]]
    assert probs == sorted(probs, reverse=True)
    assert b["backend"] == get_backend("auto").name  # the default: native where it builds
    assert b["datapath"] in ("svpe", "vpe")
    t = b["timings_ms"]
    for k in ("decode", "preprocess", "queue", "engine", "total"):
        assert t[k] >= 0, k
    assert t["total"] >= t["engine"] + t["decode"] + t["preprocess"]
    measured, modelled = b["power"]["measured"], b["power"]["modelled"]
    assert measured["available"] is False and measured["reason"]
    assert modelled["modelled"] is True
    if modelled["available"]:
        assert modelled["energy_mj"] > 0 and modelled["power_w"] > 0


def test_top_k_parameter(client, offline):
    n = len(offline.classes)
    data = VALID["L.png"]
    assert len(client.post("/v1/classify?top_k=1", data=data).get_json()["top_k"]) == 1
    assert len(client.post("/v1/classify?top_k=999", data=data).get_json()["top_k"]) == n
    assert_json_error(client.post("/v1/classify?top_k=0", data=data), 400, "top_k")
    assert_json_error(client.post("/v1/classify?top_k=x", data=data), 400, "top_k")


def test_curl_default_form_content_type_is_raw_body(client):
    # curl --data-binary @img.png sends application/x-www-form-urlencoded
    r = client.post(
        "/v1/classify", data=VALID["L.png"], content_type="application/x-www-form-urlencoded"
    )
    assert r.status_code == 200, r.data[:200]


# --- broken input ----------------------------------------------------------------------
def _truncated(name: str) -> bytes:
    data = VALID[name]
    return data[: len(data) // 2]


BROKEN = {
    "empty": (b"", 400, "empty"),
    "text": (b"hello, I am not an image", 400, "not an image"),
    "truncated-png": (_truncated("L.png"), 400, ""),
    "truncated-jpeg": (_truncated("RGB.jpg"), 400, ""),
    "png-header-only": (VALID["L.png"][:33], 400, ""),
    "huge-dimensions": (png_with_size(100_000, 100_000), 413, "too large"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_images_are_4xx_json(client, case):
    data, status, word = BROKEN[case]
    r = client.post("/v1/classify", data=data, content_type="application/octet-stream")
    assert_json_error(r, status, *([word] if word else []))
    assert_still_serving(client)


@pytest.mark.parametrize("case", ["truncated-png", "text"])
def test_broken_images_multipart(client, case):
    data, status, _ = BROKEN[case]
    r = client.post("/v1/classify", data={"image": (io.BytesIO(data), "x.png")})
    assert_json_error(r, status)
    assert_still_serving(client)


def test_wrong_multipart_field(client):
    r = client.post("/v1/classify", data={"file": (io.BytesIO(VALID["L.png"]), "x.png")})
    assert_json_error(r, 400, "'image'", "file")
    r = client.post("/v1/classify", data={"note": "hi"}, content_type="multipart/form-data")
    assert_json_error(r, 400, "'image'")
    r = client.post("/v1/classify", data={"image": (io.BytesIO(b""), "x.png")})
    assert_json_error(r, 400, "empty")
    assert_still_serving(client)


def test_body_too_large(client):
    big = b"\x89PNG" + b"\0" * (2**20 + 10)
    assert_json_error(client.post("/v1/classify", data=big), 413, "too large")
    r = client.post("/v1/classify", data={"image": (io.BytesIO(big), "x.png")})
    assert_json_error(r, 413, "too large")
    assert_still_serving(client)


def test_decompression_bomb_refused_before_decoding(make_app):
    app = make_app(max_image_pixels=100_000)
    c = app.test_client()
    bomb = encode(Image.new("L", (4000, 4000)), "PNG")  # ~16 kB file, 16 Mpixel
    assert len(bomb) < 100_000
    assert_json_error(c.post("/v1/classify", data=bomb), 413, "4000x4000")
    assert_still_serving(c)


def test_decodes_are_charged_to_one_memory_budget(make_app, monkeypatch):
    """Each decode is charged what its header says it needs (decode_cost.decode_bytes),
    before decoding; no room within budget_wait_s is 503, more than the budget is 413."""
    from pynq_nbq.decode_cost import decode_bytes, read_header
    from pynq_nbq.server import service as service_mod

    app = make_app(budget_wait_s=0.2)
    svc, c = app.extensions["nbq"], app.test_client()
    model = svc.served().model
    big, small = VALID["RGB.jpg"], VALID["L.png"]
    charge = decode_bytes(read_header(big), model.input_fit)
    small_charge = decode_bytes(read_header(small), model.input_fit)
    assert small_charge < charge
    r = c.post("/v1/classify", data=big)
    assert r.status_code == 200 and r.get_json()["image"]["decode_charge_bytes"] == charge
    assert svc.budget.in_use == 0 and svc.budget.peak == charge
    assert svc.metrics.value("nbq_decode_budget_peak_bytes") == charge
    assert svc.metrics.value("nbq_decode_budget_bytes") == svc.budget.total
    decodes = []
    real = service_mod.decode_and_preprocess
    monkeypatch.setattr(
        service_mod, "decode_and_preprocess", lambda *a: decodes.append(1) or real(*a)
    )
    with svc.budget.charge(svc.budget.total - charge + 1, 0):  # room for less than `big`
        r = c.post("/v1/classify", data=big)
        assert_json_error(r, 503, "no room to decode")
        assert r.headers["Retry-After"] == "1" and decodes == []  # refused before decoding
        assert c.post("/v1/classify", data=small).status_code == 200  # small ones still fit
    assert svc.budget.in_use == 0
    assert c.post("/v1/classify", data=big).status_code == 200
    tight = make_app(decode_budget_bytes=charge - 1)
    decodes.clear()
    r = tight.test_client().post("/v1/classify", data=big)
    assert_json_error(r, 413, "decode budget")
    assert decodes == []


def test_timing_parts_sum_to_total_first_and_under_load(make_app):
    """Every answer's parts (service.TOTAL_PARTS) add up to its total within 5 %, on a
    fresh server's first request and with 6 clients at once (issue 22)."""
    from pynq_nbq.server.service import TOTAL_PARTS

    def check(body):
        t = body["timings_ms"]
        assert set(TOTAL_PARTS) | {"conv_engine", "arm", "total"} == set(t)
        assert min(t.values()) >= -0.01, t
        assert abs(sum(t[k] for k in TOTAL_PARTS) - t["total"]) <= 0.05 * t["total"], t

    app = make_app()
    r = app.test_client().post("/v1/classify", data=VALID["L.png"])
    assert r.status_code == 200
    check(r.get_json())
    answers = []

    def client(i):
        c = app.test_client()
        for j in range(6):
            name = sorted(VALID)[(i + j) % len(VALID)]
            answers.append(c.post("/v1/classify", data=VALID[name]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 36 and all(r.status_code == 200 for r in answers)
    for r in answers:
        check(r.get_json())


def test_unknown_path_and_method_are_json(client):
    assert_json_error(client.get("/v1/nope"), 404)
    assert_json_error(client.get("/v1/classify"), 405)
    assert_json_error(client.delete("/v1/model"), 405)


def test_internal_errors_are_json_without_traceback(make_app, monkeypatch):
    app = make_app()
    svc = app.extensions["nbq"]

    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(svc.served().model, "predict", boom)
    body = assert_json_error(app.test_client().post("/v1/classify", data=VALID["L.png"]), 500)
    assert "kaput" not in body["error"] and "RuntimeError" in body["error"]


# --- health, model, page ---------------------------------------------------------------
def test_health(client):
    r = client.get("/v1/health")
    assert r.status_code == 200
    b = r.get_json()
    assert b["status"] == "ok" and b["queue"]["limit"] == 8 and b["power_available"] is False


def test_model_summary(client, offline, models_dir):
    b = client.get("/v1/model").get_json()
    assert b["classes"] == offline.classes
    assert b["datapath"] == offline.bundle.datapath
    assert b["arrays_sha256"] == offline.bundle.sha256
    assert [(x["name"], x["op"], x["placement"]) for x in b["layers"]] == offline.engine.placements
    assert b["available"] == ["broken", "rand-rgb", "rand-svpe", "rand-vpe"]
    assert b["switching"].startswith("disabled")
    assert b["modelled"]["modelled"] is True


def test_index_page(client):
    r = client.get("/")
    assert r.status_code == 200 and b'id="file"' in r.data and b'id="label"' in r.data
    assert client.get("/static/app.js").status_code == 200
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]


# --- model switching --------------------------------------------------------------------
AUTH = {"Authorization": "Bearer s3cret"}


def test_model_switch_needs_token(make_app, client):
    assert_json_error(client.post("/v1/model", json={"name": "rand-vpe"}), 403, "--token")
    c = make_app(token="s3cret").test_client()
    assert_json_error(c.post("/v1/model", json={"name": "rand-vpe"}), 401)
    r = c.post("/v1/model", json={"name": "rand-vpe"}, headers={"Authorization": "Bearer nope"})
    assert_json_error(r, 401)
    assert c.get("/v1/model").get_json()["id"] == "rand-svpe"


def test_model_switch_and_back(make_app, models_dir):
    c = make_app(token="s3cret").test_client()
    r = c.post("/v1/model", json={"name": "rand-vpe"}, headers=AUTH)
    assert r.status_code == 200, r.data[:300]
    assert r.get_json()["datapath"] == "vpe"
    b = c.post("/v1/classify", data=VALID["RGB.jpg"]).get_json()
    assert b["datapath"] == "vpe" and b["model"]["id"] == "rand-vpe"
    want, _ = offline_answer(api.load_model(models_dir / "rand-vpe"), VALID["RGB.jpg"])
    assert b["index"] == want
    r = c.post("/v1/model", json={"name": "rand-rgb"}, headers={"X-NBQ-Token": "s3cret"})
    assert r.status_code == 200 and r.get_json()["input"]["mode"] == "RGB"
    assert c.post("/v1/classify", data=VALID["CMYK.jpg"]).status_code == 200


@pytest.mark.parametrize(
    "name,status",
    [
        ("../rand-vpe", 400),
        ("/etc", 400),
        ("a/b", 400),
        ("..", 400),
        (".hidden", 400),
        ("rand-vpe/../rand-svpe", 400),
        ("outside-link", 400),
        ("missing", 404),
        (42, 400),
    ],
)
def test_model_switch_refuses_escapes(make_app, models_dir, tmp_path, name, status):
    link = models_dir / "outside-link"
    if not link.exists():
        random_bundle(tmp_path / "outside", "vpe")
        link.symlink_to(tmp_path / "outside", target_is_directory=True)
    c = make_app(token="s3cret").test_client()
    try:
        assert_json_error(c.post("/v1/model", json={"name": name}, headers=AUTH), status)
    finally:
        link.unlink()
    assert c.get("/v1/model").get_json()["id"] == "rand-svpe"


def test_model_switch_bad_bundle_keeps_serving(make_app, models_dir):
    c = make_app(token="s3cret").test_client()
    body = assert_json_error(
        c.post("/v1/model", json={"name": "broken"}, headers=AUTH), 422, "checksum", "keeps serving"
    )
    assert str(models_dir) not in body["error"]
    assert_json_error(c.post("/v1/model", data="rand-vpe", headers=AUTH), 400, "name")
    assert c.get("/v1/model").get_json()["id"] == "rand-svpe"
    assert_still_serving(c)


def test_token_mandatory_beyond_loopback(models_dir):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(ValueError, match="token is mandatory"):
        create_app(ServerConfig(model=str(models_dir / "rand-svpe"), host="0.0.0.0"))
    with pytest.raises(ValueError, match="unknown server settings"):
        create_app({"model": str(models_dir / "rand-svpe"), "colour": "blue"})


# --- the device worker: queue bound and deadlines ----------------------------------------
def _post_in_thread(app, results: list, data: bytes) -> threading.Thread:
    def go():
        results.append(app.test_client().post("/v1/classify", data=data))

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_queue_full_is_503_with_retry_after(make_app):
    backend = GatedBackend()
    app = make_app(backend=backend, max_queue=1, deadline_s=10)
    svc = app.extensions["nbq"]
    results: list = []
    t1 = _post_in_thread(app, results, VALID["L.png"])
    wait_for(backend.entered.is_set)  # first request is running on the device
    t2 = _post_in_thread(app, results, VALID["L.png"])
    wait_for(lambda: svc.worker.waiting == 1)  # second waits in the queue
    r = app.test_client().post("/v1/classify", data=VALID["L.png"])
    assert_json_error(r, 503, "busy")
    assert int(r.headers["Retry-After"]) >= 1
    backend.gate.set()
    t1.join(10)
    t2.join(10)
    assert [x.status_code for x in results] == [200, 200]
    assert svc.metrics.value("nbq_queue_rejected_total") == 1
    assert_still_serving(app.test_client())


def test_deadline_queued_and_running(make_app):
    backend = GatedBackend()
    app = make_app(backend=backend, max_queue=4, deadline_s=0.4)
    svc = app.extensions["nbq"]
    results: list = []
    t1 = _post_in_thread(app, results, VALID["L.png"])
    wait_for(backend.entered.is_set)
    t2 = _post_in_thread(app, results, VALID["L.png"])
    t1.join(5)
    t2.join(5)
    # both answered 504 while the first inference still held the device (not interrupted)
    assert not backend.gate.is_set() and len(results) == 2
    by_kind = {}
    for r in results:
        body = assert_json_error(r, 504)
        by_kind["queued" if "waiting for the device" in body["error"] else "running"] = body
    assert "not interrupted" in by_kind["running"]["error"]
    assert "queued" in by_kind
    backend.gate.set()
    wait_for(lambda: svc.metrics.value("nbq_deadline_expired_total", where="queued") == 1)
    assert svc.metrics.value("nbq_deadline_expired_total", where="running") == 1
    assert_still_serving(app.test_client())


def test_deadline_expired_job_does_not_run(make_app):
    app = make_app()
    w = app.extensions["nbq"].worker
    ran = []
    job = w.submit(lambda: ran.append(1), deadline=time.monotonic() - 1)
    with pytest.raises(Exception, match="did not run"):
        w.wait(job)
    wait_for(job.done.is_set)
    assert not ran


# --- metrics ---------------------------------------------------------------------------
def _families(text: str) -> dict:
    return {f.name: f for f in prom_parser.text_string_to_metric_families(text)}


def test_metrics_parse(client):
    client.post("/v1/classify", data=VALID["L.png"])
    client.post("/v1/classify", data=b"")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    fam = _families(r.data.decode())
    reqs = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in fam["nbq_http_requests"].samples
        if s.name == "nbq_http_requests_total"
    }
    assert reqs[("/v1/classify", "200")] >= 1 and reqs[("/v1/classify", "400")] >= 1
    lat = fam["nbq_http_request_duration_seconds"]
    assert lat.type == "histogram"
    counts = [s for s in lat.samples if s.name.endswith("_count")]
    assert counts and all(s.value >= 1 for s in counts)
    stages = {s.labels["stage"] for s in fam["nbq_inference_stage_seconds"].samples}
    assert stages == {"decode", "preprocess", "queue", "engine"}
    assert fam["nbq_power_available"].samples[0].value == 0
    assert "nbq_power_watts" in fam and not fam["nbq_power_watts"].samples
    (info,) = fam["nbq_model_info"].samples
    assert info.labels["backend"] == get_backend("auto").name  # the default: native here
    modelled = [s for s in fam["nbq_modelled_energy_joules"].samples if s.name.endswith("_total")]
    assert modelled and modelled[0].value > 0


# --- power -----------------------------------------------------------------------------
class FakeRails:
    description = "fake rails"

    def __init__(self, rails: dict[str, float]):
        self.rails = rails
        self.fail = False

    def read_w(self) -> dict[str, float]:
        if self.fail:
            raise OSError("i2c timeout")
        return dict(self.rails)


RAILS = {"VCCINT": 2.0, "VCCPSINTFP": 1.0, "VCCO_PSDDR_504": 0.5, "VCC3V3": 0.25}


def test_group_totals():
    t = pw.group_totals_w(RAILS | {"SOMETHING": 1.0})
    assert t == {"ps_w": 1.0, "pl_w": 2.0, "ddr_w": 0.5, "other_w": 1.25, "total_w": 4.75}


def test_sampler_energy_windows_and_age():
    now, images = [0.0], [0]
    src = FakeRails(RAILS)
    s = pw.PowerSampler(src, interval_s=0.5, clock=lambda: now[0], counter=lambda: images[0])
    assert s.latest()["available"] is False  # no reading yet: says so, invents nothing
    for t in (0.0, 0.5):
        now[0] = t
        images[0] += 3
        s.sample_once()
    assert s.window_energy(2.0) is None  # 0.5 s of samples < 1 s
    for t in (1.0, 1.5):
        now[0] = t
        s.sample_once()
    assert s.window_energy(0.5) is None  # window itself under 1 s
    w = s.window_energy(2.0)
    assert w["span_s"] == 1.5 and w["energy_j"] == pytest.approx(3.75 * 1.5)
    assert w["events"] == 3  # images counted at the first sample (3) and the last (6)
    w = s.window_energy(1.0)  # starts at the last sample at or before t1 - 1 s
    assert w["t0_s"] == 0.5 and w["span_s"] == 1.0
    assert s.energy_totals_j()["total"] == pytest.approx(3.75 * 1.5)
    assert s.energy_totals_j()["pl"] == pytest.approx(2.0 * 1.5)
    now[0] = 1.8
    latest = s.latest()
    assert latest["total_w"] == 3.75 and latest["pl_w"] == 2.0
    assert latest["age_s"] == pytest.approx(0.3)
    src.fail = True
    now[0] = 2.0
    assert s.sample_once() is None
    latest = s.latest()
    assert latest["age_s"] == pytest.approx(0.5) and "i2c timeout" in latest["last_error"]


def test_sampler_without_source_says_why():
    s = pw.PowerSampler(None, "not a board")
    s.start()
    assert s.latest() == {"available": False, "reason": "not a board"}
    assert s.window_energy(5) is None


def test_app_with_measured_power(make_app):
    app = make_app(power_source=FakeRails(RAILS), power_interval_s=0.05, energy_window_s=1.0)
    c = app.test_client()
    t_end = time.monotonic() + 1.3
    n = 0
    while time.monotonic() < t_end and n < 200:
        assert c.post("/v1/classify", data=VALID["L.png"]).status_code == 200
        n += 1
        time.sleep(0.02)
    m = c.post("/v1/classify", data=VALID["L.png"]).get_json()["power"]["measured"]
    assert m["available"] is True and m["total_w"] == 3.75 and m["ps_w"] == 1.0
    assert 0 <= m["age_s"] < 1.0
    assert m["energy_window_s"] >= 1.0 and m["images_in_window"] >= 1
    want = 1e3 * 3.75 * m["energy_window_s"] / m["images_in_window"]
    assert m["energy_per_image_mj"] == pytest.approx(want, rel=1e-3)
    fam = _families(c.get("/metrics").data.decode())
    assert fam["nbq_power_available"].samples[0].value == 1
    watts = {s.labels["group"]: s.value for s in fam["nbq_power_watts"].samples}
    assert watts["total"] == 3.75 and watts["ddr"] == 0.5
    energy = {s.labels["group"]: s.value for s in fam["nbq_energy_joules"].samples}
    assert energy["total"] > 3.0


def _fake_hwmon(root: Path) -> Path:
    hw = root / "class" / "hwmon"
    dev = root / "devices"

    def node(i: int, name: str, uw: int | None, client: Path | None = None) -> None:
        d = hw / f"hwmon{i}"
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        if uw is not None:
            (d / "power1_input").write_text(f"{uw}\n")
        if client is not None:
            (d / "device").symlink_to(client, target_is_directory=True)

    def i2c_client(bus: int, chan: int, addr: int) -> Path:
        adapter = dev / f"i2c-{bus}"
        adapter.mkdir(parents=True, exist_ok=True)
        (adapter / "name").write_text(f"i2c-0-mux (chan_id {chan})\n")
        c = adapter / f"{bus}-00{addr:02x}"
        c.mkdir()
        return c

    node(0, "ina226_u79", 2_000_000)  # iio-hwmon: VCCINT
    node(1, "ina226", 1_500_000, i2c_client(3, 0, 0x40))  # hwmon ina2xx: VCCPSINTFP
    node(2, "ina226", 250_000, i2c_client(4, 1, 0x4B))  # no such rail on the PL bus
    node(3, "coretemp", None)
    node(4, "ina226_u99", 1_000_000)  # unknown designator
    return hw


def test_hwmon_reader(tmp_path):
    root = _fake_hwmon(tmp_path)
    r = pw.HwmonRails(root)
    assert r.read_w() == {"VCCINT": 2.0, "VCCPSINTFP": 1.5}
    with pytest.raises(pw.SensorUnavailable, match="no ZCU102 INA226"):
        pw.HwmonRails(tmp_path / "empty")


def test_open_power_source_off_board_never_imports_pynq(tmp_path):
    had_pynq = "pynq" in sys.modules
    src, why = pw.open_power_source("auto", tmp_path / "none", compatible=[])
    assert src is None
    assert "not a Zynq UltraScale+ board" in why and "no ZCU102 INA226" in why
    assert ("pynq" in sys.modules) == had_pynq
    assert pw.open_power_source("off")[0] is None
    with pytest.raises(ValueError, match="power mode"):
        pw.open_power_source("maybe")


def test_open_power_source_on_board_falls_back_to_hwmon(tmp_path, monkeypatch):
    tried = []

    class NoPynq:
        def __init__(self, conf):
            tried.append(conf)
            raise pw.SensorUnavailable("pynq is not installed (stub)")

    monkeypatch.setattr(pw, "PynqRails", NoPynq)
    compat = ["xlnx,zynqmp-zcu102-rev1.0", "xlnx,zynqmp-zcu102", "xlnx,zynqmp"]
    src, why = pw.open_power_source("auto", _fake_hwmon(tmp_path), compatible=compat)
    assert tried == [pw.ZCU102_SENSORS_CONF]
    assert isinstance(src, pw.HwmonRails) and "hwmon" in why


def _parse_sensors_conf(text: str) -> tuple[dict, dict]:
    """{chip pattern: {feature: label}} and {bus: adapter name} from a libsensors file."""
    chips: dict[str, dict[str, str]] = {}
    buses = dict(re.findall(r'^bus "(i2c-\d+)" "([^"]+)"', text, re.M))
    current = None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r'chip "([^"]+)"', line):
            current = chips.setdefault(m.group(1), {})
        elif m := re.fullmatch(r'label (\w+) "([^"]+)"', line):
            current[m.group(1)] = m.group(2)
    return chips, buses


def test_zcu102_sensors_conf_matches_rail_table():
    chips, buses = _parse_sensors_conf(pw.ZCU102_SENSORS_CONF.read_text())
    chan_of_bus = {
        int(b[4:]): int(re.search(r"chan_id (\d)", n).group(1)) for b, n in buses.items()
    }
    assert sorted(chan_of_bus.values()) == [0, 1]
    seen_i2c, seen_iio = {}, {}
    for pattern, labels in chips.items():
        assert len(set(labels.values())) == 1, pattern  # one rail per chip
        rail = next(iter(labels.values()))
        if m := re.fullmatch(r"ina226-i2c-(\d+)-([0-9a-f]{2})", pattern):
            seen_i2c[(chan_of_bus[int(m.group(1))], int(m.group(2), 16))] = rail
            assert set(labels) == {"in1", "curr1", "power1"}
        elif m := re.fullmatch(r"ina226_(u\d+)-\*", pattern):
            seen_iio[m.group(1)] = rail
            assert set(labels) == {"in2", "curr1", "power1"}
        else:
            pytest.fail(f"unexpected chip pattern {pattern}")
    assert seen_i2c == {(r.mux_channel, r.address): r.rail for r in pw.ZCU102_RAILS}
    assert seen_iio == {r.ref: r.rail for r in pw.ZCU102_RAILS}
    groups = {r.group for r in pw.ZCU102_RAILS}
    assert groups <= set(pw.GROUPS) and {"ps", "pl", "ddr"} <= groups


def test_zcu102_sensors_conf_parses_with_libsensors():
    """lm-sensors' own parser accepts the file (it reports syntax errors even with no chips)."""
    sensors = shutil.which("sensors")
    if sensors is None:
        pytest.skip("lm-sensors is not installed")
    out = subprocess.run(
        [sensors, "-c", str(pw.ZCU102_SENSORS_CONF)], capture_output=True, text=True, timeout=30
    )
    assert "Error" not in out.stdout + out.stderr, out.stderr


def test_modelled_energy_is_marked_and_never_raises(offline):
    est = pw.modelled_energy(offline.bundle.spec)
    assert est["modelled"] is True and est["available"] is True, est
    bad = pw.modelled_energy(offline.bundle.spec, board="no-such-board")
    assert bad["modelled"] is True and bad["available"] is False and bad["reason"]


# --- the command line -------------------------------------------------------------------
def test_cli_serve_errors(models_dir, capsys, monkeypatch):
    monkeypatch.delenv("NBQ_TOKEN", raising=False)
    model = str(models_dir / "rand-svpe")
    assert cli.main(["serve", "--model", model, "--host", "0.0.0.0"]) == 2
    assert "token is mandatory" in capsys.readouterr().err
    assert cli.main(["serve", "--model", str(models_dir / "nope")]) == 2
    assert "cannot load model" in capsys.readouterr().err
    assert cli.main(["serve", "--model", model, "--max-queue", "0"]) == 2
    assert "max_queue" in capsys.readouterr().err
    for port in ("99999", "-1"):  # waitress would bind 99999 % 65536 = 34463
        assert cli.main(["serve", "--model", model, "--port", port]) == 2
        assert f"--port must be 0..65535 (0 picks a free port), got {port}" in (
            capsys.readouterr().err
        )
    assert cli.main(["serve", "--model", model, "--max-body-mb", "-1"]) == 2
    assert "--max-body-mb must be > 0, got -1.0" in capsys.readouterr().err
