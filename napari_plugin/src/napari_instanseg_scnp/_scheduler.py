r"""Which SCNP window the inspector computes next, and what it shows of a result: pure Python, no napari or Qt.

A window of a map (a key, ``(map, window)``) is computed in stages, so that the
screen does not wait for the cell tables (a large map's first samples are the
widget's, computed on the main thread, not here):

1. :data:`LAYERS`: :math:`\tilde z` and :math:`z - \tilde z` (:func:`window_layers`),
   what the two SCNP image layers show;
2. :data:`FEATURES`: each predicted and ground-truth cell's SCNP penalty
   (:func:`window_features`, the ``scnp_penalty`` column of the Labels features),
   measured on stage 1's :math:`z - \tilde z`.

:class:`WindowScheduler` holds the rules; the widget runs its jobs, one at a time,
in a thread worker, and reports each one back::

    scheduler.reset()                           # a new analysis
    cached = scheduler.request(("seed map", 5))  # the slider moved: show `cached` now unless None
    job = scheduler.next_job()                  # None while a job runs, or when nothing is left to do
    result = run_job(job, analysis)              # in the worker thread
    if scheduler.finished(job, result):         # back in the main thread: show it
        show(job.key, scheduler.result(job.key))
    job = scheduler.next_job()                  # and so on (scheduler.failed(job) if it raised)

A result is a tuple: ``(z~, z - z~)`` after stage 1, and ``(z~, z - z~, prediction
penalty, ground-truth penalty)`` once stage 2 is in (the penalties in the order of
the features tables' rows; the ground truth's empty without one).

Rules: one job runs at a time; while it runs, only the latest requested key waits
(keys requested in between are never started); a result of an older generation
(from before the last :meth:`~WindowScheduler.reset`) is dropped, neither cached nor
shown. The wanted key's layers come first, then its features; then, with
``prefetch``, the layers of the map's other windows, nearest first (ties: the
smaller window), then their features in the same order, each once per generation.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_instanseg_scnp._compute import Penalty, WindowCache, penalty_column

if TYPE_CHECKING:
    from napari_instanseg_scnp._analysis import Analysis

__all__ = ["FEATURES", "LAYERS", "Job", "WindowScheduler", "run_job", "window_features", "window_layers"]

LAYERS = 1
"""Stage 1: z~ and z - z~, what the screen needs."""
FEATURES = 2
"""Stage 2: the cells' SCNP penalty columns."""

Key = tuple[Hashable, int]
"""``(map, window)``: a key of ``Analysis.penalties`` and an odd window."""


@dataclass(frozen=True, eq=False)
class Job:
    """One computation to run: ``stage`` (:data:`LAYERS` or :data:`FEATURES`) of ``key``.

    A features job carries the ``(z~, z - z~)`` it measures in ``layers``, so it
    runs even if the cache has dropped them meanwhile; a layers job has None.
    """

    generation: int
    key: Key
    stage: int
    layers: tuple[np.ndarray, np.ndarray] | None = None


def window_layers(penalty: Penalty, window: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Stage 1 (in a worker thread): :math:`\tilde z` and :math:`z - \tilde z` of ``penalty`` at ``window``."""
    return penalty.compute(window)


def window_features(analysis: Analysis, difference: np.ndarray, window: int,
                    ground_truth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""Stage 2 (in a worker thread): each predicted and ground-truth cell's SCNP penalty.

    :func:`~napari_instanseg_scnp._compute.penalty_column` of ``difference``
    (:math:`z - \tilde z` at ``window``), in the order of the prediction's and the
    ground truth's features tables. The ground truth's labels are ``ground_truth``,
    else ``analysis.ground_truth``; its column is empty without labels or features.
    """
    prediction = penalty_column(analysis.prediction_features, analysis.prediction, difference, window)
    if ground_truth is None:
        ground_truth = getattr(analysis, "ground_truth", None)
    gt_features = analysis.ground_truth_features
    if ground_truth is None or gt_features is None:
        return prediction, np.empty(0)
    return prediction, penalty_column(gt_features, ground_truth, difference, window)


def run_job(job: Job, analysis: Analysis, ground_truth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``job`` on ``analysis`` (in a worker thread): :func:`window_layers` or :func:`window_features`."""
    target, window = job.key
    if job.stage == LAYERS:
        return window_layers(analysis.penalties[target], window)
    return window_features(analysis, job.layers[1], window, ground_truth)


class WindowScheduler:
    """The inspector's window computations: wanted key, cache, generation, coalescing, prefetch, two stages.

    Parameters
    ----------
    windows : iterable of int
        The slider's windows: the ones prefetching computes.
    cache : WindowCache, optional
        Where results stay (a new 512 MiB one by default).
    prefetch : bool
        Once the wanted key is done, compute the other windows of its map.

    Attributes
    ----------
    generation : int
        Counts :meth:`reset` calls; jobs carry the one they were started in.
    wanted : (map, window) or None
        The key last requested.
    running : Job or None
        The job handed out by :meth:`next_job` and not yet reported.
    """

    def __init__(self, windows: Iterable[int], cache: WindowCache | None = None, prefetch: bool = True) -> None:
        self.windows = tuple(sorted(set(windows)))
        self.cache = WindowCache() if cache is None else cache
        self.prefetch = prefetch
        self.generation = 0
        self.wanted: Key | None = None
        self.running: Job | None = None
        self._done: set[tuple[Key, int]] = set()
        self._failed: set[tuple[Key, int]] = set()

    def reset(self) -> None:
        """A new analysis: empty the cache, forget the wanted key, make the running job's result stale.

        The running job still counts as running until it is reported
        (:meth:`finished` or :meth:`failed`): one computation at a time.
        """
        self.generation += 1
        self.cache.clear()
        self.wanted = None
        self._done.clear()
        self._failed.clear()

    def request(self, key: Key) -> tuple[np.ndarray, ...] | None:
        """Make ``key`` the wanted one; its cached result (show it now), or None (a job will compute it).

        A result of 2 arrays has no features yet: a stage-2 job follows. Requesting a
        key retries its stages that failed.
        """
        self.wanted = key
        stages = {(key, LAYERS), (key, FEATURES)}
        self._failed.difference_update(stages)
        cached = self.result(key)
        if cached is None or len(cached) == 2:  # dropped from the cache: compute it again
            self._done.difference_update(stages if cached is None else {(key, FEATURES)})
        return cached

    def result(self, key: Key) -> tuple[np.ndarray, ...] | None:
        """The cached result of ``key`` (2 or 4 arrays), or None; does not request it."""
        return self.cache.get(key)

    def next_job(self) -> Job | None:
        """The job to start now, marked running; None while one runs, or when nothing is left to do."""
        if self.running is None and self.wanted is not None:
            self.running = self._plan()
            return self.running
        return None

    def pending(self) -> bool:
        """A job runs, or :meth:`next_job` has one to hand out."""
        return self.running is not None or (self.wanted is not None and self._plan() is not None)

    def finished(self, job: Job, result: tuple[np.ndarray, np.ndarray]) -> bool:
        """Report the running ``job``'s result (the pair its stage returns); True: show it now.

        A result of the current generation is cached (features join their key's
        layers), and is to be shown if its key is the wanted one; a result of an
        older generation is dropped (False).
        """
        self._release(job)
        if job.generation != self.generation:
            return False
        self._done.add((job.key, job.stage))
        if job.stage == LAYERS:
            self.cache.put(job.key, tuple(result))
        else:
            layers = self.cache.get(job.key) or job.layers
            self.cache.put(job.key, (*layers[:2], *result))
        if job.key != self.wanted:
            self.cache.get(self.wanted)  # the wanted key stays the most recently used: dropped last
            return False
        return True

    def failed(self, job: Job) -> bool:
        """Report that the running ``job`` raised; True if it is of the current generation (tell the user).

        That stage of that key is not tried again until the key is requested again.
        """
        self._release(job)
        if job.generation != self.generation:
            return False
        self._failed.add((job.key, job.stage))
        return True

    def _release(self, job: Job) -> None:
        if job is not self.running:
            raise ValueError(f"{job} is not the running job {self.running}")
        self.running = None

    def _plan(self) -> Job | None:
        # Each stage of each key once per generation (the wanted key again once requested again): a
        # window the cache drops is not recomputed in the background, so that a cache too small for
        # every window cannot keep the prefetch going round in circles.
        target, window = key = self.wanted
        keys = [key]
        if self.prefetch:
            keys += [(target, w) for w in sorted(self.windows, key=lambda w: (abs(w - window), w)) if w != window]
        for stage, group in ((LAYERS, keys[:1]), (FEATURES, keys[:1]), (LAYERS, keys[1:]), (FEATURES, keys[1:])):
            for candidate in group:
                if (candidate, stage) in self._done or (candidate, stage) in self._failed:
                    continue
                if stage == LAYERS and candidate not in self.cache:
                    return Job(self.generation, candidate, LAYERS)
                if stage == FEATURES and candidate in self.cache:  # features measure cached layers
                    cached = self.cache.get(candidate)
                    if len(cached) == 2:
                        return Job(self.generation, candidate, FEATURES, cached)
        return None
