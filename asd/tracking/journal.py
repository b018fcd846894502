"""The write-ahead journal: its file format, one ``apply_entry`` and the replay.

Why a journal: a sweep runs for hours, the MLflow server may not. With ``journal_dir`` set,
every write is appended to the journal *before* it is sent; if MLflow cannot be reached the
write stays pending, a warning is logged and training goes on. :func:`sync_journal` replays
what is pending once the server is back.

Format (one JSON object per line, ``<journal_dir>/<pid>-<8 hex>.jsonl``, one file per
:class:`~asd.tracking.Tracker`, append-only, flushed and fsync'ed line by line):

- intent: ``{"seq": 7, "ts": 1712345678.9, "op": "log_metrics", "args": {...}}``;
  ``op`` is one of ``start_sweep, start_trial, log_params, log_metrics, log_artifact,
  log_artifacts, log_table, set_tags, finish, log_encoder``. Args hold everything the call needs,
  metric timestamps included, so a replay writes exactly what the first attempt would have.
- done: ``{"ack": 7, "result": {...}}`` (applied; ``start_*`` results carry
  ``{"ref": "pending-<hex>", "run_id": "<real id>"}``, ``log_encoder`` ``model_uri``).
- failed: ``{"fail": 7, "error": "..."}``: MLflow rejected it for a reason a replay cannot
  fix (a changed param value, a missing file); it is never replayed.
- an intent with neither is *pending*. While a ``start_*`` call is pending, it returns a
  placeholder run id ``pending-<hex>`` that later calls (in any process sharing the journal
  folder) may use; a replay maps it to the real run id.
- ``<journal_dir>/blobs/<file stem>-<seq>/`` keeps a copy of the files of a pending
  ``log_artifact(s)``/``log_encoder`` (and every ``log_table`` CSV) so a replay still has them.

Replays are idempotent: runs are found again by their ``asd.sweep_id`` / ``asd.trial_id``
tags, params and tags are re-set to the same values, metrics carry their original timestamp
(MLflow drops exact duplicates), artifacts overwrite the same path, and a logged encoder is
found again by its content hash.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Literal

from asd.errors import AsdError, one_line, redact
from asd.tracking.store import Resolve, Store, Unresolved
from asd.tracking.uri import check_tracking, is_unavailable

log = logging.getLogger(__name__)

PENDING = "pending-"
"""Prefix of a placeholder run id (or model id) whose start is still in the journal."""


# --------------------------------------------------------------------------- the file format


def blob_dir(journal_file: Path, seq: int) -> Path:
    """Where the journal keeps the files of entry ``seq``."""
    return journal_file.parent / "blobs" / f"{journal_file.stem}-{seq}"


def with_blobs(journal_file: Path | None, entry: dict) -> dict:
    """Args of an entry with its local files pointed at the journal's copies, if any."""
    args = dict(entry["args"])
    if journal_file is None:
        return args
    blob = blob_dir(journal_file, entry["seq"])
    if blob.is_dir():
        for key in ("path", "dir"):
            if key in args:
                args[key] = str(blob / Path(args[key]).name)
    return args


def keep_blobs(journal_file: Path, entry: dict) -> None:
    """Copy the files a pending entry needs into the journal (the originals may go away)."""
    args = entry["args"]
    blob = blob_dir(journal_file, entry["seq"])
    try:
        if "path" in args and Path(args["path"]).is_file() and not blob.is_dir():
            blob.mkdir(parents=True)
            shutil.copy2(args["path"], blob / Path(args["path"]).name)
        elif "dir" in args and Path(args["dir"]).is_dir() and not blob.is_dir():
            shutil.copytree(args["dir"], blob / Path(args["dir"]).name)
    except OSError as err:
        log.warning(
            "journal: could not keep a copy of %s: %s", args.get("path", args.get("dir")), err
        )


def append(path: Path | None, record: dict) -> None:
    """One JSON line, flushed and fsync'ed: the journal must survive a crash right after."""
    if path is None:
        return
    line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_journal(path: Path) -> tuple[list[dict], dict[int, dict], set[int]]:
    """(intents in seq order, acks by seq, failed seqs); a torn last line is ignored."""
    intents, acks, failed = [], {}, set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "seq" in rec:
                intents.append(rec)
            elif "ack" in rec:
                acks[rec["ack"]] = rec.get("result") or {}
            elif "fail" in rec:
                failed.add(rec["fail"])
    intents.sort(key=lambda r: r["seq"])
    return intents, acks, failed


def note_ref(refs: dict[str, str], result: dict) -> None:
    """Remember placeholder -> run id from a start's ack."""
    if "ref" in result and "run_id" in result:
        refs[result["ref"]] = result["run_id"]


def refs_in(journal_dir: Path) -> dict[str, str]:
    """Placeholder -> real run id, from every ack in the journal folder."""
    refs: dict[str, str] = {}
    for path in sorted(journal_dir.glob("*.jsonl")):
        for result in read_journal(path)[1].values():
            note_ref(refs, result)
    return refs


# --------------------------------------------------------------------------- one apply


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one journal entry."""

    state: Literal["done", "pending", "failed"]
    """done: acked; pending: MLflow (or a placeholder's start) not there yet; failed: refused."""
    result: dict = dataclasses.field(default_factory=dict)
    """The ack's result (``done`` only)."""
    error: BaseException | None = None
    """Why it is pending or failed."""


def apply_entry(
    store: Store, journal_file: Path | None, entry: dict, refs: dict[str, str], resolve: Resolve
) -> Outcome:
    """Apply one entry and record the outcome: the one error policy of the live and replay paths.

    An unavailable store or a placeholder not yet known leaves the entry pending (no record);
    anything else MLflow refuses is recorded as failed and never retried; success is acked.
    """
    try:
        result = store.apply(entry["op"], with_blobs(journal_file, entry), entry["ts"], resolve)
    except Unresolved as err:
        return Outcome("pending", error=err)
    except Exception as err:
        if is_unavailable(err):
            return Outcome("pending", error=err)
        append(journal_file, {"fail": entry["seq"], "error": one_line(err)})
        return Outcome("failed", error=err)
    note_ref(refs, result)
    append(journal_file, {"ack": entry["seq"], "result": result})
    return Outcome("done", result)


# --------------------------------------------------------------------------- replay


@dataclasses.dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_journal` did."""

    replayed: int
    """Pending entries applied now."""
    skipped: int
    """Entries already applied (or failed) earlier: nothing to do."""
    failed: int = 0
    """Entries MLflow refused during this replay (recorded, never retried)."""


class _Replay:
    """One pass over a journal folder; a placeholder's start is applied before its users."""

    def __init__(self, journal_dir: Path, tracking_uri: str) -> None:
        self.uri = tracking_uri
        self.store = Store(tracking_uri)
        self.state = {p: read_journal(p) for p in sorted(journal_dir.glob("*.jsonl"))}
        self.refs: dict[str, str] = {}
        self.starts: dict[str, tuple[Path, dict]] = {}  # placeholder -> its pending start
        for path, (intents, acks, failed) in self.state.items():
            for result in acks.values():
                note_ref(self.refs, result)
            for entry in intents:
                seq = entry["seq"]
                if entry["op"].startswith("start_") and seq not in acks and seq not in failed:
                    self.starts[entry["args"]["ref"]] = (path, entry)
        self.counts = {"replayed": 0, "skipped": 0, "failed": 0}
        self.done: set[tuple[Path, int]] = set()

    def run(self) -> SyncReport:
        for path, (intents, acks, failed) in self.state.items():
            for entry in intents:
                if entry["seq"] in acks or entry["seq"] in failed:
                    self.counts["skipped"] += 1
                else:
                    self.apply(path, entry)
        return SyncReport(**self.counts)

    def apply(self, path: Path, entry: dict) -> None:
        if (path, entry["seq"]) in self.done:
            return
        self.done.add((path, entry["seq"]))
        outcome = apply_entry(self.store, path, entry, self.refs, self.resolve)
        if outcome.state == "pending" and outcome.error is not None:
            raise AsdError(
                f"lost MLflow at {redact(self.uri)} while replaying {path.name} "
                f"#{entry['seq']} ({one_line(outcome.error)}): run the sync again later"
            ) from outcome.error
        if outcome.state == "failed":
            log.warning(
                "journal: MLflow refused %s #%d: %s", entry["op"], entry["seq"], outcome.error
            )
        self.counts["replayed" if outcome.state == "done" else "failed"] += 1

    def resolve(self, ref: str) -> str:
        if not ref.startswith(PENDING):
            return ref
        if ref not in self.refs and ref in self.starts:
            self.apply(*self.starts[ref])  # a start from another file (or later in this one)
        if ref not in self.refs:  # no journal holds its start: nothing will ever know it
            raise AsdError(f"unknown run {ref}")
        return self.refs[ref]


def sync_journal(journal_dir: Path, tracking_uri: str) -> SyncReport:
    """Replay every pending journal entry in ``journal_dir`` into ``tracking_uri``, in order.

    Idempotent: each applied entry gets an ack line, so a second sync replays nothing; and
    the operations themselves are safe to repeat (see the module docstring). Files are
    replayed one after the other in name order, each in its own sequence order; a
    placeholder run id from another file is resolved by applying that file's start first.
    Run it when no tracker is writing to the folder (after the sweep, or before resuming).
    """
    journal_dir = Path(journal_dir)
    if not journal_dir.is_dir():
        raise AsdError(f"no journal folder at {journal_dir}")
    check_tracking(tracking_uri)
    return _Replay(journal_dir, tracking_uri).run()
