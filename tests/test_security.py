"""Security basics: local binds, no unpickling of model files, no leaked secrets, safe promotion.

Compose ports bind to 127.0.0.1 unless ASD_BIND says otherwise: tests/test_docker.py
(test_published_ports_bind_to_localhost_by_default). The servers of tests/test_cluster_e2e.py
and tests/test_reliability_sweep.py are started with ``--host 127.0.0.1`` as the README shows.
"""

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

from asd.config import Config
from asd.errors import AsdError
from asd.model.encoder import load_encoder

pytestmark = pytest.mark.usefixtures("cli_environment")  # it runs `asd` in-process

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-s3cret-7f3a9c",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-s3cret-51be02",
    "MLFLOW_TRACKING_TOKEN": "mlflow-t0ken-88d1c4",
}


# --------------------------------------------------------------------------- binds


def test_in_process_ray_is_a_new_local_instance_without_dashboard(monkeypatch):
    """No HTTP dashboard / jobs API, and never joins a cluster found on the machine.

    Ray's own gRPC ports (GCS, raylet, workers) still listen on every interface whatever
    ``ray.init`` is told; on an untrusted network use RAY_AUTH_MODE=token or a firewall.
    """
    import ray

    from asd.sweep import runner
    from asd.sweep.settings import SweepSettings

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    runner._init_ray(SweepSettings(space=Path("x.yaml")))
    assert calls == [
        {
            "address": "local",
            "include_dashboard": False,
            "dashboard_host": "127.0.0.1",
            "log_to_driver": True,
            "logging_level": logging.WARNING,  # Ray's own INFO lines stay off the console
        }
    ]


def test_readme_and_compose_servers_bind_to_localhost():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert "--dashboard-host 127.0.0.1" in readme and "--host 127.0.0.1" in readme
    assert "0.0.0.0" not in readme
    compose = next((root / "docker").glob("*compose*.y*ml")).read_text()
    assert "${ASD_BIND:-127.0.0.1}" in compose


# --------------------------------------------------------------------------- weights only


class _Payload:
    """Unpickling this would run code: it must never happen when a model file is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_encoder_file_with_a_pickled_object_is_refused(tmp_path, tiny_encoder_file):
    path = tiny_encoder_file(tmp_path / "encoder.pt")
    load_encoder(path)  # the genuine file loads
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "pwned"
    state["extra"] = {"data_fingerprint": _Payload(marker)}
    torch.save(state, path)
    with pytest.raises(AsdError, match="cannot read encoder file"):
        load_encoder(path)
    assert not marker.exists(), "the payload ran"


def test_a_plain_pickle_posing_as_an_encoder_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "encoder.pt"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(AsdError, match=str(path)):
        load_encoder(path)
    assert not marker.exists()


def test_a_training_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    from asd.model.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    torch.save({"config": Config().to_json(), "evil": _Payload(marker)}, path)
    with pytest.raises(AsdError, match="cannot read checkpoint"):
        load_checkpoint(path, Config(), torch.device("cpu"))
    assert not marker.exists()


# --------------------------------------------------------------------------- registry safety


def test_promote_cli_refuses_an_incomparable_version_and_keeps_the_alias(
    tmp_path, capsys, tiny_encoder_file
):
    from mlflow import MlflowClient

    from asd.cli.main import main
    from asd.serve import registry
    from asd.tracking import Tracker, default_tracking_uri

    tags = registry.RegistryTags.from_tags
    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(uri, "security")
    trial = tracker.start_trial(tracker.start_sweep("s", {}), "t", {})
    model_uri = tracker.log_encoder(trial, tiny_encoder_file(tmp_path / "encoder.pt"))
    base = {"metric": "holdout.hmean", "estimator": "ml", "data_fingerprint": "fp-1"}
    v1 = registry.register_encoder(uri, model_uri, "enc", tags({**base, "metric_value": "0.60"}))
    assert main(["promote", "--model-name", "enc", "--version", v1, "--tracking-uri", uri]) == 0
    other_data = {**base, "metric_value": "0.99", "data_fingerprint": "fp-2"}
    v2 = registry.register_encoder(uri, model_uri, "enc", tags(other_data))
    capsys.readouterr()
    code = main(["promote", "--model-name", "enc", "--version", v2, "--tracking-uri", uri])
    out = capsys.readouterr().out
    assert code == 1
    assert "data" in out.lower() and out.strip(), out
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("enc", "champion").version) == v1
    code = main(["promote", "--model-name", "enc", "--version", "99", "--tracking-uri", uri])
    assert code in (1, 2)
    assert str(client.get_model_version_by_alias("enc", "champion").version) == v1


# --------------------------------------------------------------------------- secrets


@pytest.mark.slow
def test_a_sweep_logs_no_secret_from_the_environment(tmp_path, monkeypatch, synth_tree, tiny_space):
    """Run a one-trial sweep with secrets in the environment; scan everything it wrote."""
    from mlflow import MlflowClient

    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings
    from asd.tracking import default_tracking_uri

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    data = synth_tree(train_source=6, seed=2)
    params = {"loss.temperature": "{uniform: [0.1, 0.2]}"}
    space = tiny_space(tmp_path / "one.yaml", params, num_samples=1, epochs=1)
    workdir = tmp_path / "work"
    result = run_sweep(
        SweepSettings(space=space, data=data, workdir=workdir, name="secrets", device="cpu")
    )
    assert (result.summary["status"] == "finished").all()

    uri = default_tracking_uri(workdir)
    client = MlflowClient(tracking_uri=uri)
    # listing a run's artifacts also lists its logged models, which MLflow looks up through
    # the process-wide tracking URI, not the client's
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    texts = []
    for run in client.search_runs([client.get_experiment_by_name("asd").experiment_id]):
        texts.append(json.dumps([run.data.params, run.data.tags, list(run.data.metrics)]))
        texts.extend(_artifact_texts(client, run.info.run_id))
    assert len(texts) > 10
    for folder in (workdir / "ray_results", workdir / "journal"):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in {".json", ".jsonl", ".csv", ".txt", ".log"}:
                texts.append(path.read_text(errors="replace"))
    blob = "\n".join(texts)
    for key, value in SECRETS.items():
        assert value not in blob, f"{key} leaked"
    assert "alice" not in blob


def _artifact_texts(client, run_id, path=None):
    out = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out.extend(_artifact_texts(client, run_id, item.path))
        elif item.path.endswith((".csv", ".json", ".yaml", ".txt", "MLmodel")):
            local = client.download_artifacts(run_id, item.path)
            out.append(Path(local).read_text(errors="replace"))
    return out


def test_environment_secrets_are_not_read_by_the_package():
    """No module reads credentials itself: MLflow and boto read them where they need them."""
    root = Path(__file__).resolve().parents[1] / "asd"
    source = "\n".join(p.read_text() for p in root.rglob("*.py"))
    for key in (*SECRETS, "MLFLOW_TRACKING_USERNAME"):
        assert key not in source, key
    assert "os.environ.copy()" not in source and "dict(os.environ)" not in source
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") not in SECRETS.values()


def test_redact_masks_passwords_and_lone_tokens():
    from asd.errors import redact

    assert redact("http://alice:s3cret@host:5000/x") == "http://alice:***@host:5000/x"
    assert redact("https://t0ken@host") == "https://***@host"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_redact_masks_every_uri_quoted_in_a_message():
    from asd.errors import redact

    text = "cannot reach postgresql://u:p@ss@db:5432/x (refused); s3://tok@bucket/k"
    out = redact(text)
    assert out == "cannot reach postgresql://u:***@db:5432/x (refused); s3://***@bucket/k"
    assert "p@ss" not in out and "tok" not in out
