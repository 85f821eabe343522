"""Background work for the inspector: a napari thread worker with a progress bar and a Cancel.

The computations (:func:`~napari_instanseg_scnp._analysis.analyse_steps`,
:func:`~napari_instanseg_scnp._models.compare_models_steps`) are generators that
take ``progress(done, total)`` and ``cancel()`` callables: they run in the worker's
thread, so ``progress`` re-emits through the worker's own ``yielded`` signal (Qt
queues it to the main thread, where the bar lives), and ``cancel`` reads a flag
the main thread sets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from napari.qt.threading import create_worker
from napari.utils import progress as progress_bar

__all__ = ["BackgroundTask", "Progress", "TaskError"]


class TaskError(Exception):
    """A ``RuntimeError`` of the computation (CUDA out of memory, a model that cannot take the input), re-raised
    as another type: superqt ends a generator worker that raises ``RuntimeError`` with a warning only, emitting
    neither ``errored`` nor ``finished``."""


def _runtime_errors_reraised(function: Callable) -> Callable:
    """``function`` (a generator function) with its ``RuntimeError`` re-raised as :class:`TaskError`."""
    def run(*args: object, **kwargs: object):
        try:
            return (yield from function(*args, **kwargs))
        except RuntimeError as error:
            raise TaskError(str(error)) from error

    return run


class Progress(NamedTuple):
    """``done`` of ``total`` steps (tiles) of the running computation."""

    done: int
    total: int


class BackgroundTask:
    """Runs one computation at a time in a thread worker; a newer start makes the running one stale."""

    def __init__(self, description: str, idle: Callable[[], None] | None = None) -> None:
        self.description = description
        self.idle = idle
        """Called when the last computation, current or cancelled, has stopped."""
        self._worker = None
        self._stopping: set = set()
        self._cancelled: threading.Event | None = None
        self._bar = None

    @property
    def running(self) -> bool:
        """A computation runs, current or cancelled and not yet stopped."""
        return self._worker is not None or bool(self._stopping)

    @property
    def current(self) -> bool:
        """A computation whose result will be delivered runs."""
        return self._worker is not None

    def start(self, function: Callable, *args: object, stage: Callable[[str], None], returned: Callable,
              errored: Callable[[Exception], None], **kwargs: object) -> None:
        """Start ``function(*args, progress=..., cancel=..., **kwargs)``; ``stage`` hears its yielded stage names."""
        self.cancel()
        cancelled = threading.Event()
        relay: dict = {}

        def progress(done: int, total: int) -> None:  # in the worker's thread
            relay["worker"].yielded.emit(Progress(int(done), int(total)))

        worker = create_worker(_runtime_errors_reraised(function), *args, progress=progress, cancel=cancelled.is_set,
                               _start_thread=False, _ignore_errors=True, **kwargs)  # errors: to `errored`
        relay["worker"] = worker
        worker.yielded.connect(lambda value: self._on_yielded(worker, value, stage))
        worker.returned.connect(lambda value: worker is self._worker and returned(value))
        worker.errored.connect(lambda error: worker is self._worker and errored(error))
        worker.finished.connect(lambda: self._on_finished(worker))
        self._worker, self._cancelled = worker, cancelled
        worker.start()

    def cancel(self) -> None:
        """Ask the running computation to stop at its next tile or stage; its result and errors are dropped."""
        if self._worker is not None:
            self._cancelled.set()
            self._worker.quit()
            self._stopping.add(self._worker)
            self._worker = None
            self._close_bar()

    def _on_yielded(self, worker: object, value: object, stage: Callable[[str], None]) -> None:
        if worker is not self._worker:
            return
        if isinstance(value, Progress):
            if self._bar is None:
                self._bar = progress_bar(total=value.total, desc=self.description)
            self._bar.update(value.done - self._bar.n)
        else:
            stage(str(value))

    def _on_finished(self, worker: object) -> None:
        self._stopping.discard(worker)
        if worker is self._worker:
            self._worker = None
            self._close_bar()
        if not self.running and self.idle is not None:
            self.idle()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
