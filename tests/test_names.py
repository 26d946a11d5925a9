"""The same names everywhere a user looks: layers in `nbq info` and `nbq perf`, and the
`timings_ms` keys of the Python API and the server."""

from __future__ import annotations

import io
import json

from pynq_nbq import api, cli
from pynq_nbq.api import SERVER_TIMING_KEYS, TIMING_KEYS


def test_info_and_perf_name_layers_the_same(capsys):
    path = str(api.model_path("fmnist-svpe"))
    assert cli.main(["info", "--model", path, "--json"]) == 0
    info = [r["name"] for r in json.loads(capsys.readouterr().out)["layers"]]
    assert cli.main(["perf", "--bundle", path, "--json"]) == 0
    perf = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in perf["svpe"]["layers"]] == info
    assert cli.main(["perf", "--bundle", path]) == 0
    text = capsys.readouterr().out
    assert all(f"\n{name} " in text for name in info)  # full names, never cut short
    assert "features.10" in info


def test_api_and_server_timings_share_keys(tmp_path):
    from pynq_nbq.server import ServerConfig, create_app

    pred = api.load_model().classify([str(api.sample_images()[0])])
    assert set(pred.timings_ms) == set(TIMING_KEYS) - set(SERVER_TIMING_KEYS)
    app = create_app(ServerConfig(model="fmnist-svpe", token=None, models_dir=tmp_path))
    try:
        png = api.sample_images()[0].read_bytes()
        r = app.test_client().post("/v1/classify", data={"image": (io.BytesIO(png), "x.png")})
        assert r.status_code == 200, r.get_json()
        assert set(r.get_json()["timings_ms"]) == set(TIMING_KEYS)
    finally:
        app.extensions["nbq"].close()
