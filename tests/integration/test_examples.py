"""The shipped examples run for real on the python image, offline, twice with the same bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_train_example(env, python_image):
    shutil.copytree(REPO / "examples/train", env.root)
    digests = []
    for _ in range(2):
        res = env.run("train", "--payload", "payload.json", "--network", "none", timeout=300)
        assert res.returncode == 0, res.output
        rec = env.last()
        assert rec["status"] == "succeeded" and rec["result"]["path"] == "models/model_summary.json"
        assert {a["path"] for a in rec["artifacts"]} >= {"models/model_summary.json"}
        digests.append((rec["result"]["sha256"], tuple(a["sha256"] for a in rec["artifacts"])))
    assert digests[0] == digests[1]
    summary = json.loads(env.run("result").stdout)
    assert summary
    assert not (env.root / "models").exists()  # the user's tree is untouched


def test_dates_example_uses_payload_variables(env, python_image):
    shutil.copytree(REPO / "examples/dates", env.root)
    payload = json.loads((env.root / "payload.json").read_text())
    res = env.run("report", "--payload", "payload.json", timeout=300)
    assert res.returncode == 0, res.output
    assert f"using trained model {payload['TRAINED_MODEL_ID']}" in res.stdout
    report = env.run("result").stdout
    assert payload["FROM_DATE"] in report and payload["UNTIL_DATE"] in report


def test_train_serve_example_reads_the_trained_model(env, python_image):
    shutil.copytree(REPO / "examples/train-serve", env.root)
    trained = env.run("train", "--network", "none", timeout=300)
    assert trained.returncode == 0, trained.output
    train_id = env.last()["id"]
    (env.root / "payload.json").write_text(json.dumps({"MODEL_RUN": train_id}))
    served = env.run("serve", "--payload", "payload.json", "--network", "none", timeout=300)
    assert served.returncode == 0, served.output
    assert json.loads(env.run("result").stdout) == {"x": 10, "y": 19.95}
    assert env.last()["inputs"] == [{"run": train_id, "job": "train", "status": "succeeded"}]
