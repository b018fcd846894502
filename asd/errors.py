"""What a user is told: the one exception, one-line messages without secrets, notes said once.

``AsdError`` is raised at the boundary and printed by the CLI in one line; :func:`one_line`
shortens any other error to that form; :func:`redact` masks credentials in URIs before a
message or log line shows them; :func:`warn_once` logs a note once per process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable


class AsdError(Exception):
    """A problem the user can act on (a bad file, a missing folder, an impossible setting).

    The message names the file or setting and fits on one line; the CLI prints it as
    ``asd: <message>`` without a traceback.
    """


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s]*)@")
# greedy up to the last '@' before the path: a password may itself hold an '@'


def redact(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` as ``scheme://user:***@``.

    A lone ``scheme://token@`` is the secret itself and becomes ``scheme://***@``. Works on a
    bare URI and on a message that quotes one (an error from a database driver, say).
    """

    def mask(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if colon else f"{match['scheme']}***@"

    return _USERINFO.sub(mask, text)


def one_line(err: BaseException, last: bool = False) -> str:
    """An error's message on one line (at most 300 characters), or its type's name.

    ``last=True`` takes the last line instead of the first: the root cause at the end of a
    remote traceback (a Ray task error's first line only names the worker).
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return (lines[-1] if last else lines[0])[:300]


_said: set[tuple[str, Hashable]] = set()


def warn_once(logger: logging.Logger, message: str, key: Hashable = None) -> None:
    """Log ``message`` as a warning the first time ``key`` (default: the message) comes up.

    For notes a loop would repeat: features read the same clip many times, a sweep refits a
    scorer every epoch.
    """
    said = (logger.name, message if key is None else key)
    if said not in _said:
        _said.add(said)
        logger.warning(message)


def forget_warnings() -> None:
    """Say every note again from now on: a new trial in a reused worker has its own notes."""
    _said.clear()
