"""`ray job submit` entry point to promote a registered encoder version (or run it anywhere).

    python jobs/promote.py --version 3 --tracking-uri http://mlflow:5000

Sets the alias `champion` only when the version beats the current champion on the same
metric, estimator and data; otherwise prints why not and exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asd.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]]))
