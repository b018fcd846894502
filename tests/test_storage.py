"""Tune storage as a URI: a real S3-compatible server (moto_server) on 127.0.0.1, no mocks."""

import subprocess
import sys
from pathlib import Path

import pytest
from servers import s3_server, server_env

from asd.data.synth.tree import synthesize
from asd.sweep.storage import is_uri, latest_sweep, storage_root, sweep_exists

REPO = Path(__file__).resolve().parents[1]


def test_uris_pass_through_and_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_root("s3://bucket/sweeps/", Path("w")) == "s3://bucket/sweeps"
    assert storage_root("runs", Path("w")) == str(tmp_path / "runs")
    assert storage_root(None, Path("w")) == str(tmp_path / "w" / "ray_results")
    assert is_uri("gs://b/p") and not is_uri("/tmp/x") and not is_uri("C://x")


def test_local_lookups_find_the_newest_sweep_of_a_prefix(tmp_path):
    import os

    storage = tmp_path / "ray_results"
    assert not sweep_exists(storage, "smoke-1") and latest_sweep(storage, "smoke-") is None
    for i, name in enumerate(["smoke-20260102-000000", "smoke-20260101-000000", "paper-x"]):
        (storage / name).mkdir(parents=True)
        os.utime(storage / name, (1000 + i, 1000 + i))
    (storage / "smoke-file").write_text("not a sweep")
    assert sweep_exists(storage, "paper-x") and sweep_exists(str(storage), "smoke-file")
    assert not sweep_exists(storage, "smoke-2")
    assert latest_sweep(storage, "smoke-") == "smoke-20260101-000000"  # changed last
    os.utime(storage / "smoke-20260102-000000", (1001, 1001))  # a tie: the later name
    assert latest_sweep(storage, "smoke-") == "smoke-20260102-000000"
    assert latest_sweep(storage, "default-") is None


def test_a_checkpoint_without_the_trials_config_is_refused(tmp_path):
    from ray.tune import Checkpoint, Result

    from asd.errors import AsdError
    from asd.sweep.storage import CONFIG_FILE, fetch_checkpoint

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "encoder.pt").write_bytes(b"x")
    ckpt = Checkpoint.from_directory(str(tmp_path / "ckpt"))
    result = Result(metrics={}, checkpoint=ckpt, error=None, path=str(tmp_path / "t"))
    with pytest.raises(AsdError, match=f"trial t1's last checkpoint .* holds no {CONFIG_FILE}"):
        fetch_checkpoint(result, "t1", tmp_path / "dest")
    (tmp_path / "ckpt" / CONFIG_FILE).write_text("{}")
    dest = fetch_checkpoint(result, "t1", tmp_path / "dest")
    assert sorted(p.name for p in dest.iterdir()) == [CONFIG_FILE, "encoder.pt"]
    empty = Result(metrics={}, checkpoint=None, error=None, path=str(tmp_path / "t"))
    with pytest.raises(AsdError, match="trial t2 left no checkpoint in storage"):
        fetch_checkpoint(empty, "t2", tmp_path / "dest")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3")
    with s3_server(root) as env:
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_keys(env)).create_bucket(
            Bucket="asd"
        )
        yield env


def _keys(env):
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def test_sweep_lookups_read_the_bucket(s3, monkeypatch):
    import boto3

    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], **_keys(s3))
    assert not sweep_exists("s3://asd/lookups", "smoke-20260101-000000")
    assert latest_sweep("s3://asd/lookups", "smoke-") is None
    for name in ("smoke-20260101-000000", "smoke-20260102-000000", "other-20260103-000000"):
        client.put_object(Bucket="asd", Key=f"lookups/{name}/tuner.pkl", Body=b"x")
    assert sweep_exists("s3://asd/lookups", "smoke-20260101-000000")
    assert latest_sweep("s3://asd/lookups", "smoke-") == "smoke-20260102-000000"


@pytest.mark.slow
def test_a_sweep_with_s3_storage_registers_its_winner(s3, shrunk_space, tmp_path):
    """Checkpoints go to the bucket; the winner's encoder comes back from its last one."""
    import boto3

    data = tmp_path / "data"
    synthesize(data, machines=("fan", "valve"), train_source=10, train_target=2,
               test_per_domain=3, seconds=1.0, seed=5)  # fmt: skip
    work, space = tmp_path / "work", shrunk_space("smoke")  # the shipped space, one-epoch sizes
    sweep = subprocess.run(
        [
            sys.executable, "-m", "asd.cli.main", "sweep", "--space", str(space),
            "--data", str(data), "--workdir", str(work), "--name", "s3sweep", "--num-samples", "2",
            "--max-concurrent", "2", "--storage-path", "s3://asd/sweeps",
        ],
        cwd=tmp_path, env=server_env(**s3, PYTHONPATH=str(REPO)),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = sweep.stdout + sweep.stderr
    assert sweep.returncode == 0, output[-5000:]
    assert "registered model version 1" in output
    assert not (work / "ray_results").exists(), "nothing of the sweep went to the local default"

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], **_keys(s3))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="asd", Prefix="sweeps/s3sweep/")
            .get("Contents", [])]  # fmt: skip
    assert any(k.endswith("/encoder.pt") and "/checkpoint_" in k for k in keys), keys
    assert any(k.endswith("/config.json") and "/checkpoint_" in k for k in keys), keys

    from mlflow import MlflowClient

    uri = f"sqlite:///{work.resolve()}/mlflow.db"
    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("asd-encoder", "1")
    assert version.tags["sweep_id"] == "s3sweep"
    assert version.tags["trial_id"]
