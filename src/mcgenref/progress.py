"""The one progress bar style of every command (rich): description, bar, count, times."""

from __future__ import annotations


def progress_bar(description: str = "[progress.description]{task.description}",
                 fields: str | None = None, enabled: bool = True):  # noqa: ANN201
    """A :class:`rich.progress.Progress`; ``fields`` adds a text column of task fields
    (e.g. ``"loss {task.fields[loss]}"``); ``enabled=False`` shows nothing (other ranks)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn()]
    if fields:
        columns.append(TextColumn(fields))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, disable=not enabled)
