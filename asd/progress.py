"""Progress for long loops, with no dependency beyond the standard library.

The core must run where only torch and friends are installed, so this is a small
stand-in for tqdm: a bar on a terminal, one line every few seconds otherwise (CI logs).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T],
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    stream: TextIO | None = None,
    every_s: float = 5.0,
) -> Iterator[T]:
    """Yield ``items`` while drawing progress on ``stream`` (stderr by default)."""
    if not enabled:
        yield from items
        return
    out = stream or sys.stderr
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    tty = hasattr(out, "isatty") and out.isatty()
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if tty or now - last >= every_s or done == total:
            last = now
            out.write(("\r" if tty else "") + _line(desc, done, total, now - start))
            if not tty:
                out.write("\n")
            out.flush()
    if tty:
        out.write("\n")
        out.flush()


def _line(desc: str, done: int, total: int | None, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        width = 24
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        return f"{desc} [{bar}] {done}/{total} {elapsed:.0f}s ({rate:.1f}/s)"
    return f"{desc} {done} {elapsed:.0f}s ({rate:.1f}/s)"
