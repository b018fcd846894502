"""MLflow tracking for sweeps: one parent run per sweep, one child run per trial.

``uri`` checks tracking URIs; ``store`` is the MLflow adapter (the only code
that writes); ``journal`` is the write-ahead journal, its one ``apply_entry`` and the replay
(``sync_journal``); ``tracker`` is the :class:`Tracker` the sweep writes through; ``model``
is the encoder as a pyfunc model; ``figures`` picks a trial's metrics and tables.
"""

from asd.tracking.journal import SyncReport, sync_journal
from asd.tracking.model import EncoderModel
from asd.tracking.store import (
    ENCODER_DIR,
    ENCODER_FILE,
    KIND_TRAINING,
    TAG_ENCODER_SHA,
    TAG_KIND,
    TAG_PARENT,
    TAG_SWEEP,
    TAG_TRIAL,
)
from asd.tracking.tracker import STATUSES, Tracker
from asd.tracking.uri import (
    check_tracking,
    default_tracking_uri,
    is_unavailable,
    sqlite_path,
)

__all__ = [
    "ENCODER_DIR",
    "ENCODER_FILE",
    "KIND_TRAINING",
    "STATUSES",
    "TAG_ENCODER_SHA",
    "TAG_KIND",
    "TAG_PARENT",
    "TAG_SWEEP",
    "TAG_TRIAL",
    "EncoderModel",
    "SyncReport",
    "Tracker",
    "check_tracking",
    "default_tracking_uri",
    "is_unavailable",
    "sqlite_path",
    "sync_journal",
]
