"""`ray job submit` entry point for a sweep.

    ray job submit --address http://127.0.0.1:8265 --runtime-env jobs/runtime_env.yaml \
        -- python jobs/sweep.py --space search_spaces/default.yaml \
           --data /data/dcase2023t2 --tracking-uri http://mlflow:5000

Flags are those of `asd sweep`. The data path, the tracking URI and the work folder may come
from the environment instead (ASD_DATA, MLFLOW_TRACKING_URI, ASD_WORKDIR): the job's working
directory is a temporary upload, so the work folder defaults to ~/asd-work on the head node.
(`asd sweep` itself reads MLFLOW_TRACKING_URI when no --tracking-uri is given.)
The job checks MLflow and the data before any training and fails at once if either is missing.
On several nodes the work folder must be storage every node mounts at the same path (the
compose file sets ASD_WORKDIR=/shared/asd-work): before the first trial, a probe on every node
that could run one reads the driver's feature cache, and the job stops with one line if any
node cannot.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asd.cli.main import main  # noqa: E402
from asd.cli.platform import job_argv  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(job_argv(sys.argv[1:])))
