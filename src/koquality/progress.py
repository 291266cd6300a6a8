"""Progress reporting that the library emits and the CLI renders.

Stages call `stage(description, total)` and `advance(n)` on what it yields. By default nothing is shown
(library use, tests); the CLI installs a `rich` progress display with rows/s and ETA for the duration of a
command through `use_reporter`.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator, Protocol


class Reporter(Protocol):
    def __call__(self, description: str, total: int | None,
                 unit: str = "rows") -> contextlib.AbstractContextManager[Callable[[int], None]]: ...


@contextlib.contextmanager
def _silent(description: str, total: int | None, unit: str = "rows") -> Iterator[Callable[[int], None]]:
    yield lambda n=1: None


_reporter: contextvars.ContextVar[Reporter] = contextvars.ContextVar("koquality_reporter", default=_silent)
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("koquality_inside_stage", default=False)


@contextlib.contextmanager
def stage(description: str, total: int | None, unit: str = "rows") -> Iterator[Callable[[int], None]]:
    """One bar per stage: a stage run inside another (score() per shard inside the pipeline's loop) is silent."""
    if _inside.get():
        yield lambda n=1: None
        return
    token = _inside.set(True)
    try:
        with _reporter.get()(description, total, unit) as advance:
            yield advance
    finally:
        _inside.reset(token)


@contextlib.contextmanager
def use_reporter(reporter: Reporter) -> Iterator[None]:
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


def rich_reporter(console) -> Reporter:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    class PerSecond(TextColumn):
        def __init__(self, unit: str):
            super().__init__("")
            self.unit = unit

        def render(self, task):
            speed = task.finished_speed or task.speed
            from rich.text import Text

            shown = f"{speed:,.0f}" if speed and speed >= 10 else f"{speed:.2f}" if speed else ""
            return Text(f"{shown} {self.unit}/s" if speed else "", style="progress.data.speed")

    @contextlib.contextmanager
    def report(description: str, total: int | None, unit: str = "rows"):
        with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), PerSecond(unit),
                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                      transient=False) as progress:
            task = progress.add_task(description, total=total)
            try:
                yield lambda n=1: progress.advance(task, n)
            except BaseException:
                # an error's one-line message stands alone: no bar, and no blank line where it was (rich
                # clears a transient display, and prints a newline after any other on a non-terminal)
                progress.remove_task(task)
                progress.live.transient = True
                progress.live.stop()
                progress.disable = True
                raise
            done = progress.tasks[-1].completed
            progress.update(task, total=total if total is not None else done, completed=total if total is not None else done)

    return report
