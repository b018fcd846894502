"""The command line: `asd data|train|evaluate|score|detector|sweep|promote|sync` (:mod:`.main`)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The `asd` console script: :func:`asd.cli.main.main`, imported when run."""
    from asd.cli.main import main as run

    return run(argv)
