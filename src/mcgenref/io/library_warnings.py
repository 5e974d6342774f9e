"""Warnings of the libraries we call (pydicom, highdicom, Pillow, ...) as one project line.

A library warning (``warnings.warn`` or a ``logging`` record at WARNING or above) would reach
the terminal in Python's raw form: the library's source path, the line number, the category
and, for highdicom's person-name check, a paragraph with a URL. The command line shows it as
one line in the project's own form instead, ``warning: FILE: LIBRARY: first sentence``, where
FILE is the input being read or written when the library warned.

The input is known through :func:`attributed_to`, a thread-local mark that the readers and the
SEG writer set around their library calls: thread-local because ``mcgenref segment`` reads
images in worker threads while another thread writes the previous image's SEG, so a global
mark (or ``warnings.catch_warnings``, which swaps process-wide state) would name the wrong
file or swallow another thread's warning.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

#: The longest text kept of a library's message (its first sentence, whitespace collapsed).
MAX_WARNING_CHARS = 240

_local = threading.local()
_SITE = re.compile(r"[\\/](?:site|dist)-packages[\\/]([^\\/]+)")


@contextlib.contextmanager
def attributed_to(path: str | Path) -> Iterator[None]:
    """Library warnings raised in this thread inside the block name ``path``'s file name."""
    stack: list[str] = _local.__dict__.setdefault("stack", [])
    stack.append(Path(path).name)
    try:
        yield
    finally:
        stack.pop()


def current_input() -> str | None:
    """The file name set by the innermost :func:`attributed_to` of this thread, or None."""
    stack = _local.__dict__.get("stack")
    return stack[-1] if stack else None


def _library(filename: str) -> str:
    """``highdicom`` for ``.../site-packages/highdicom/base.py``; the module's stem otherwise."""
    match = _SITE.search(filename)
    if match:
        return match.group(1).split(".")[0]
    return Path(filename).stem or "python"


def first_sentence(text: object) -> str:
    """The message's first sentence on one line, at most :data:`MAX_WARNING_CHARS` long."""
    s = " ".join(str(text).split())
    m = re.search(r"(?<=[.!?])\s+(?=[A-Z(])", s)
    if m and m.start() >= 20:  # "e.g. X" and the like are not a sentence end worth cutting at
        s = s[: m.start()]
    return s if len(s) <= MAX_WARNING_CHARS else s[: MAX_WARNING_CHARS - 3] + "..."


def library_warning_line(message: object, filename: str, library: str | None = None) -> str:
    """``FILE: LIBRARY: first sentence`` (``LIBRARY: ...`` outside :func:`attributed_to`);
    the CLI prints it after ``warning: ``."""
    text = first_sentence(message)
    lib = library or _library(filename)
    name = current_input()
    return f"{name}: {lib}: {text}" if name else f"{lib}: {text}"


class OneLineLogHandler(logging.Handler):
    """A logging handler that hands library records (WARNING and above) to ``emit_line`` as
    :func:`library_warning_line` text, e.g. ``IM1.dcm: pydicom: ...``."""

    def __init__(self, emit_line: Callable[[str], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._emit_line = emit_line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            library = record.name.split(".")[0] or "python"
            self._emit_line(library_warning_line(record.getMessage(), record.pathname, library))
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)
