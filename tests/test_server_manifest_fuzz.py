"""Issue 15, finding 4: every malformed manifest sent to ``POST /v1/model`` is answered
4xx with the field named, and the current model keeps serving.  Hypothesis mutates a
valid manifest (one value replaced by arbitrary JSON, or a key deleted) and the
server must never answer 500."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynq_nbq.server import ServerConfig, create_app
from pynq_nbq.testing import random_bundle

AUTH = {"Authorization": "Bearer t"}
FIELD_WORDS = ("manifest", "arrays", "checksum", "json")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    random_bundle(root / "good", "svpe", seed=4)
    shutil.copytree(root / "good", root / "fuzz")
    app = create_app(
        ServerConfig(model=str(root / "good"), models_dir=root, power="off", token="t")
    )
    yield app, root, json.loads((root / "good" / "manifest.json").read_text())
    app.extensions["nbq"].close()


def post_manifest(app, root: Path, text: str):
    (root / "fuzz" / "manifest.json").write_text(text)
    return app.test_client().post("/v1/model", json={"name": "fuzz"}, headers=AUTH)


def assert_refused_naming_a_field(resp) -> None:
    assert resp.status_code in (200, 422), (resp.status_code, resp.data[:300])
    if resp.status_code == 422:
        msg = resp.get_json()["error"]
        assert "keeps serving" in msg
        assert "unreadable manifest" not in msg, msg  # the safety net: a validation gap
        assert any(w in msg.lower() for w in FIELD_WORDS), msg


def paths(obj, prefix=()):
    """Every (path) to a value inside a JSON tree."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def replaced(obj, path, value, delete=False):
    if not path:
        return value
    out = obj.copy() if isinstance(obj, dict) else list(obj)
    head = path[0]
    if len(path) == 1 and delete and isinstance(out, dict):
        del out[head]
    elif len(path) == 1 and delete:
        out.pop(head)
    else:
        out[head] = replaced(obj[head], path[1:], value, delete)
    return out


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=int(os.environ.get("NBQ_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_manifests_are_4xx_naming_the_field(setup, data):
    app, root, good = setup
    all_paths = [p for p in paths(good) if p]
    path = data.draw(st.sampled_from(all_paths), label="path")
    delete = data.draw(st.booleans(), label="delete")
    value = None if delete else data.draw(json_values, label="value")
    manifest = replaced(good, path, value, delete)
    assert_refused_naming_a_field(post_manifest(app, root, json.dumps(manifest)))
    assert app.test_client().get("/v1/health").status_code == 200


@pytest.mark.parametrize(
    "case",
    ["tensors-input-int", "nested-list-input", "deep-brackets", "not-utf8", "top-level-list"],
)
def test_issue_manifests_are_422(setup, case):
    """The three manifests of the issue that gave 500, and two more shapes."""
    app, root, good = setup
    m = json.loads(json.dumps(good))
    before = app.extensions["nbq"].served()
    if case == "tensors-input-int":
        first = next(iter(m["tensors"]))
        m["tensors"][first] = 5
        text = json.dumps(m)
    elif case == "nested-list-input":
        m["layers"][0]["inputs"] = [["x"]]
        text = json.dumps(m)
    elif case == "deep-brackets":
        text = "[" * 100_000
    elif case == "top-level-list":
        text = json.dumps([m])
    else:
        (root / "fuzz" / "manifest.json").write_bytes(b'{"a": "\xff"}')
        text = None
    if text is None:
        resp = app.test_client().post("/v1/model", json={"name": "fuzz"}, headers=AUTH)
    else:
        resp = post_manifest(app, root, text)
    assert resp.status_code == 422, resp.data[:300]
    assert_refused_naming_a_field(resp)
    assert app.extensions["nbq"].served() is before
