"""A CI-sized load test: ``nbq serve`` (waitress) in its own process on 127.0.0.1, the
client here: 200 requests at concurrency 8, zero errors, every answer identical to the
offline engine's, bounded memory growth, /metrics parsed by prometheus_client.

The full run (2,000 requests) is ``python -m scripts.bench_server``; numbers in
docs/server.md.
"""

from __future__ import annotations

import pytest

from pynq_nbq import api
from pynq_nbq.testing import random_bundle
from scripts.server_load import bench

prom_parser = pytest.importorskip("prometheus_client.parser")

N_REQUESTS = 200
CONCURRENCY = 8
WARMUP = 40
SEQUENTIAL = 40


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    if api.DEFAULT_MODEL in api.embedded_models():
        return str(api.model_path(None))
    return str(random_bundle(tmp_path_factory.mktemp("m") / "rand", "svpe", seed=7).path)


@pytest.fixture(scope="module")
def result(model_path):
    return bench(
        model_path,
        n_requests=N_REQUESTS,
        concurrency=CONCURRENCY,
        sequential=SEQUENTIAL,
        warmup=WARMUP,
    )


def test_load_zero_errors_identical_answers(result):
    load = result["load"]
    print({k: v for k, v in result.items() if k != "metrics_text"})
    assert load["requests"] == N_REQUESTS
    assert load["errors"] == 0, load["error_examples"]
    assert load["mismatches"] == 0
    assert result["sequential"]["errors"] == 0 and result["sequential"]["mismatches"] == 0
    # every answer's timing parts add up to its total (issue 22), under load and alone
    assert load["parts_vs_total_worst"] <= 0.05
    assert result["sequential"]["parts_vs_total_worst"] <= 0.05
    for key in ("client_latency_p50_ms", "client_latency_p99_ms", "overhead_p50_ms"):
        assert load[key] is not None and load[key] >= 0


def test_load_overhead_and_memory_are_bounded(result):
    # generous bounds: CI machines are shared; the targets are checked by the full bench
    seq = result["sequential"]
    assert seq["overhead_excl_queue_p50_ms"] < 25
    if result["rss_growth_mb"] is not None:
        assert result["rss_growth_mb"] < 40


def test_metrics_after_load_parse(result):
    assert result["metrics_status"] == 200
    fams = {f.name: f for f in prom_parser.text_string_to_metric_families(result["metrics_text"])}
    ok = [
        s.value
        for s in fams["nbq_http_requests"].samples
        if s.name == "nbq_http_requests_total"
        and s.labels == {"endpoint": "/v1/classify", "method": "POST", "status": "200"}
    ]
    assert ok == [WARMUP + N_REQUESTS + SEQUENTIAL]
    counts = [
        s.value
        for s in fams["nbq_http_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["endpoint"] == "/v1/classify"
    ]
    assert counts == [WARMUP + N_REQUESTS + SEQUENTIAL]
    assert fams["nbq_power_available"].samples[0].value == 0
