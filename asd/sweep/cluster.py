"""Multi-node check: every node that may run a trial must see the driver's work folder.

The driver writes the feature cache (and the journal) into the work folder once; trials on
other nodes open them by path. If the folder is not on storage those nodes mount at the same
path (NFS, the compose file's ``/shared``), every trial would fail after the sweep started.
So before Tune starts, one probe per node that could hold a trial runs where a trial would,
reads a token the driver just wrote plus the cache's metadata, and the sweep refuses in one
line if any node cannot.
"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from asd.errors import AsdError

if TYPE_CHECKING:
    from asd.sweep.settings import SweepSettings

log = logging.getLogger(__name__)

TOKEN_FILE = ".asd-shared-check"
"""Written by the driver into the work folder before each sweep; read back on every node."""
PROBE_TIMEOUT_S = 180.0
"""How long the probes may take (a busy node must still answer: nothing waits forever)."""


def probe(workdir: str, features_path: str, token: str) -> str | None:
    """Run on a node: None when it reads the driver's token and feature cache, else why not."""
    host = socket.gethostname()
    try:
        seen = (Path(workdir) / TOKEN_FILE).read_text()
    except OSError:
        seen = None
    if seen != token:
        return f"node {host} does not see the driver's work folder {workdir}"
    try:
        (Path(features_path) / "meta.json").read_bytes()
        with open(Path(features_path) / "mel.npy", "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"node {host} cannot read the feature cache {features_path} ({exc.strerror})"
    return None


def check_shared_workdir(
    workdir: Path, features_path: str, cpus: float, gpus: float, timeout_s: float = PROBE_TIMEOUT_S
) -> int:
    """Probe every alive node with room for a trial (``cpus``/``gpus``); the number probed.

    Raises AsdError (one line) naming the first node that cannot read the work folder.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    (workdir / TOKEN_FILE).write_text(token)
    nodes = [
        n
        for n in ray.nodes()
        if n.get("Alive")
        and n["Resources"].get("CPU", 0) >= cpus
        and n["Resources"].get("GPU", 0) >= gpus
    ]
    # A sliver of a CPU: the probe runs on the node even while something else holds its CPUs.
    remote = ray.remote(num_cpus=0.01, num_gpus=0)(probe)
    pending = [
        remote.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(str(workdir), features_path, token)
        for n in nodes
    ]
    try:
        answers = ray.get(pending, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise AsdError(
            f"the shared-work-folder check got no answer from every node in {timeout_s:.0f}s"
        ) from None
    for answer in answers:
        if answer is not None:
            raise AsdError(
                f"{answer}: trials there could not open it; put the work folder (--workdir, "
                "ASD_WORKDIR) on storage every node mounts at the same path"
            )
    return len(nodes)


def check_trial_nodes(
    settings: SweepSettings, workdir: Path, features_path: str, workers: int
) -> None:
    """Refuse (one line) when a node that may run trials cannot read the driver's work folder."""
    # A data-parallel trial's workers each hold one GPU and cpus_per_trial CPUs.
    gpus = 1.0 if workers > 1 and settings.gpus_per_trial else settings.gpus_per_trial
    nodes = check_shared_workdir(workdir, features_path, settings.cpus_per_trial or 1.0, gpus or 0)
    log.info("work folder %s is readable on all %d node(s) that can run a trial", workdir, nodes)
