"""Detectors in the registry: pyfunc predict, the real `mlflow models serve`, add-machine."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from servers import BIN, free_port, server_env, stop, wait_http

from asd.cli.detector import parse_model_uri
from asd.cli.main import main
from asd.config import Config
from asd.data.layouts import index_data
from asd.detect.artifact import fit_detector, load_detector, save_detector
from asd.errors import AsdError
from asd.features import extract_features
from asd.serve import registry
from asd.serve.audio import score_table
from asd.serve.model import DETECTOR_MODEL, register_detector
from asd.serve.promotion import promote
from asd.serve.registry import RegistryTags

pytestmark = pytest.mark.usefixtures("cli_environment")  # it runs `asd` in-process

CFG = {"features.n_mels": 16, "scoring.family": "reference", "scoring.reference": "meanstd"}
REPO = Path(__file__).resolve().parents[1]


def tags(fp="data-a", value=0.7):
    return RegistryTags("tune.hmean", metric_value=value, estimator="ml", data_fingerprint=fp)


@pytest.fixture(scope="module")
def served(synth_tree, tmp_path_factory):
    """A reference detector of fan + slider, registered as champion in a local sqlite store."""
    tmp = tmp_path_factory.mktemp("serve")
    root = synth_tree()
    index = index_data(root)
    cfg = Config().with_overrides(CFG)
    features = extract_features(index, cfg.features, tmp / "features", progress=False)
    folder = save_detector(fit_detector(None, features, cfg, "data-a"), tmp / "detector")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    version = register_detector(uri, folder, tags())
    assert promote(uri, DETECTOR_MODEL, version).promoted
    return {"root": root, "uri": uri, "tmp": tmp, "version": version, "folder": folder}


def _clips(root: Path, machine: str) -> list[Path]:
    return sorted((root / "dev_data" / "raw" / machine / "test").glob("*.wav"))[:4]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _cli_scores(served, machine: str, tmp: Path, model="models:/asd-detector@champion"):
    out = tmp / f"{machine}.csv"
    argv = ["score", *map(str, _clips(served["root"], machine)), "--model", model,
            "--machine", machine, "--tracking-uri", served["uri"], "--workdir", str(tmp / "w"),
            "--out", str(out), "--quiet", "--batch-size", "3"]  # fmt: skip
    assert main(argv) == 0
    return pd.read_csv(out)


def test_model_uri_forms():
    assert parse_model_uri("models:/asd-detector@champion") == ("asd-detector", "champion")
    assert parse_model_uri("models:/asd-detector/3") == ("asd-detector", "3")
    with pytest.raises(AsdError, match="expected models:/<name>@<alias>"):
        parse_model_uri("models:/asd-detector")


def test_pyfunc_predicts_paths_and_bytes_alike(served, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served["uri"])
    model = mlflow.pyfunc.load_model("models:/asd-detector@champion")
    clips = _clips(served["root"], "fan")
    by_path = model.predict(pd.DataFrame({"machine": "fan", "section": 0,
                                          "audio": [str(p) for p in clips]}))  # fmt: skip
    by_bytes = model.predict(pd.DataFrame({"machine": "fan", "section": 0,
                                           "audio": [_b64(p) for p in clips]}))  # fmt: skip
    pd.testing.assert_frame_equal(by_path, by_bytes)
    assert not list(served["tmp"].rglob("*.pkl"))  # the model is built from code, not unpickled
    cli = _cli_scores(served, "fan", tmp_path)  # batches of 3: a batch boundary inside
    np.testing.assert_allclose(by_path["anomaly_score"], cli["anomaly_score"], rtol=1e-12)
    assert list(cli["decision"]) == list(by_path["decision"])


def test_bad_rows_say_which_and_why(served, tmp_path):
    detector = load_detector(served["folder"])
    good = _clips(served["root"], "fan")[0]
    with pytest.raises(AsdError, match="row 0: machine pump section 00 is not in this detector"):
        score_table(detector, pd.DataFrame({"machine": ["pump"], "section": [0], "audio": ["x"]}))
    not_audio = base64.b64encode(b"this is not a wav file at all").decode()
    table = pd.DataFrame({"machine": "fan", "section": 0, "audio": [str(good), not_audio]})
    with pytest.raises(AsdError, match=r"row 1: not readable audio \(Error opening 'the clip'"):
        score_table(detector, table)
    with pytest.raises(AsdError, match="row 0: audio is neither a file"):
        score_table(detector, pd.DataFrame({"machine": ["fan"], "section": [0], "audio": ["?"]}))


def _post(port: int, records: list[dict]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_real_server_answers_posted_wavs(served, tmp_path):
    """`mlflow models serve` on the champion: same scores as `asd score`, 4xx for bad clips."""
    clips = _clips(served["root"], "slider")
    wave, rate = sf.read(clips[0], dtype="float32")
    nan_wav, slow_wav = tmp_path / "nan.wav", tmp_path / "8k.wav"
    sf.write(nan_wav, np.where(np.arange(len(wave)) == 5, np.nan, wave), rate, subtype="FLOAT")
    sf.write(slow_wav, wave[::2], rate // 2, subtype="FLOAT")
    port = free_port()
    log = tmp_path / "serve.log"
    env = server_env(
        MLFLOW_TRACKING_URI=served["uri"],
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", "models:/asd-detector@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "-w", "1"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, log)
        status, body = _post(port, [{"machine": "slider", "section": 0, "audio": _b64(p)}
                                    for p in clips])  # fmt: skip
        assert status == 200, body
        served_rows = pd.DataFrame(body["predictions"])
        cli = _cli_scores(served, "slider", tmp_path)
        np.testing.assert_allclose(served_rows["anomaly_score"], cli["anomaly_score"], rtol=1e-9)
        assert list(served_rows["decision"]) == list(cli["decision"])
        for record, expected in [
            ({"machine": "pump", "section": 0, "audio": _b64(clips[0])}, "machine pump section 00"),
            (
                {"machine": "slider", "section": 0, "audio": _b64(nan_wav)},
                "row 0: the clip has 1 NaN or infinite",
            ),
            (
                {"machine": "slider", "section": 0, "audio": "bm90IGEgd2F2"},
                "row 0: not readable audio",
            ),
        ]:
            status, body = _post(port, [record])
            assert 400 <= status < 500 and expected in body["message"], body
        status, body = _post(port, [{"machine": "slider", "section": 0, "audio": _b64(slow_wav)}])
        assert status == 200 and "resampled 8000 Hz to 16000 Hz" in body["predictions"][0]["note"]
    finally:
        stop(proc)


def test_add_machine_is_a_new_version_old_one_untouched(served, synth_tree, tmp_path):
    valve = synth_tree(machines=("valve",))
    work = tmp_path / "w"
    argv = ["detector", "add-machine", "--model", "models:/asd-detector@champion",
            "--data", str(valve), "--tracking-uri", served["uri"], "--workdir", str(work),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    versions = registry.mlflow.MlflowClient(served["uri"]).search_model_versions(
        f"name = '{DETECTOR_MODEL}'"
    )
    new = max(int(v.version) for v in versions)
    assert new > int(served["version"])
    before = _cli_scores(served, "fan", tmp_path, model=f"models:/asd-detector/{served['version']}")
    after = _cli_scores(served, "fan", tmp_path / "b", model=f"models:/asd-detector/{new}")
    pd.testing.assert_series_equal(before["anomaly_score"], after["anomaly_score"])
    valve_scores = _cli_scores({**served, "root": valve}, "valve", tmp_path / "v",
                               model=f"models:/asd-detector/{new}")  # fmt: skip
    assert np.isfinite(valve_scores["anomaly_score"]).all()
    with pytest.raises(AsdError, match="machine valve section 00 is not in this detector"):
        load_detector(served["folder"]).check_sections(
            pd.DataFrame({"machine": ["valve"], "section": [0]})
        )
    grown = registry.model_version(served["uri"], DETECTOR_MODEL, str(new)).tags
    assert grown["parent_version"] == served["version"]
    assert grown["data_fingerprint"].startswith("data-a+")


def test_promotion_refuses_a_detector_fitted_on_other_data(served):
    other = register_detector(served["uri"], served["folder"], tags("data-b", value=0.99))
    decision = promote(served["uri"], DETECTOR_MODEL, other)
    assert not decision.promoted and "data fingerprint differs" in decision.reason
    assert str(registry.champion(served["uri"], DETECTOR_MODEL).version) == served["version"]


def test_evaluate_model_scores_the_frozen_detector(served, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(served["folder"]), "--data", str(served["root"]),
            "--workdir", str(served["tmp"]), "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "official score" in capsys.readouterr().out
    from asd.detect.detector import evaluate_detector

    cfg = Config().with_overrides(CFG)
    features = extract_features(index_data(served["root"]), cfg.features,
                                served["tmp"] / "features", progress=False)  # fmt: skip
    want = evaluate_detector(None, features, cfg, ["ml"], companions=False)
    got = json.loads((out / "ml" / "summary.json").read_text())
    assert got["hmean"] == pytest.approx(want.by_estimator["ml"].summary["hmean"], abs=1e-12)
