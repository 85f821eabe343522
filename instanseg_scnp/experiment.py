"""An experiment: SCNP settings × windows × seeds, each an ordinary training run, side by side, then ``compare``.

::

    OUT/
        baseline-s0/            one run directory per (setting, window, seed), as `instanseg-scnp train` writes
        scnp-mask-w3-s0/
        ...
        logs/<run>.log          each run's log
        comparison/             compare_runs of every run, rewritten at the end of each invocation

Every run is an independent process (``jobs`` at a time): one InstanSeg training
keeps a GPU far from busy, and on a CPU two small trainings of one thread each
train more tiles per second than one of two threads. The experiment can be
stopped at any point and started again with the same arguments: finished runs
are kept, interrupted ones resume from their last checkpoint, and a run
directory trained with other settings is refused.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from instanseg_scnp._files import read_json
from instanseg_scnp._logs import send_package_logs
from instanseg_scnp._options import SCNP_TARGETS, look_up_option
from instanseg_scnp.rundir import CHECKPOINT, CONFIG, EVALUATION, overwrite_staging
from instanseg_scnp.scnp import normalize_window
from instanseg_scnp.training.config import TrainConfig

logger = logging.getLogger(__name__)

RUN_PREFIX = {"off": "baseline", "mask": "scnp-mask", "seed": "scnp-seed", "mask+seed": "scnp-mask+seed"}
"""SCNP target -> the start of its run directories' names."""
SET_BY_EXPERIMENT = ("out", "seed", "scnp", "scnp_window")
"""Training settings the experiment sets for each run; every other one passes through."""


class ExperimentError(RuntimeError):
    """Some runs of an experiment failed; the message names them and their logs."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of an experiment: its directory name and full config."""

    name: str
    config: TrainConfig

    @property
    def status(self) -> str:
        """``finished``, ``resume`` (a checkpoint, or one of an unfinished restart), ``restart`` (stopped in its
        first epoch) or ``new``."""
        out = self.config.out
        if (out / EVALUATION / "summary.json").is_file():
            return "finished"
        if (out / CHECKPOINT).is_file() or (overwrite_staging(out) / CHECKPOINT).is_file():
            return "resume"
        return "restart" if (out / CONFIG).is_file() else "new"


def plan_experiment(out: str | Path, *, targets: Sequence[str] = SCNP_TARGETS, seeds: int = 5,
                    windows: Sequence[int] = (3,), **settings: object) -> list[PlannedRun]:
    """The runs of an experiment, seed by seed (a stopped experiment has every setting equally far).

    ``targets`` are SCNP targets (``off`` is the baseline, one run per seed);
    every other target runs once per window in ``windows``. ``settings`` are
    :class:`TrainConfig` fields shared by all runs.

    Examples
    --------
    >>> [run.name for run in plan_experiment("exp", targets=("off", "mask"), seeds=2, windows=(3, 5))]
    ['baseline-s0', 'scnp-mask-w3-s0', 'scnp-mask-w5-s0', 'baseline-s1', 'scnp-mask-w3-s1', 'scnp-mask-w5-s1']
    """
    given = sorted(set(settings) & set(SET_BY_EXPERIMENT))
    if given:
        raise ValueError(f"the experiment sets {given} for each run; pass seeds=, targets= and windows= instead")
    if not targets:
        raise ValueError("targets must name at least one SCNP target")
    targets = list(dict.fromkeys(look_up_option(target, SCNP_TARGETS, name="targets") for target in targets))
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1 (runs seeds 0 .. seeds - 1), got {seeds!r}")
    if not windows:
        raise ValueError("windows must hold at least one odd window")
    for window in windows:
        try:
            normalize_window(window, 2)
        except (TypeError, ValueError) as error:
            raise ValueError(f"windows must be positive odd ints, got {window!r} ({error})") from None
    out = Path(out)
    runs = []
    for seed in range(seeds):
        for target in targets:
            for window in (None,) if target == "off" else dict.fromkeys(windows):
                name = f"{RUN_PREFIX[target]}-s{seed}" if window is None else f"{RUN_PREFIX[target]}-w{window}-s{seed}"
                extra = {} if window is None else {"scnp_window": window}
                runs.append(PlannedRun(name, TrainConfig(**settings, out=out / name, seed=seed, scnp=target, **extra)))
    return runs


def check_existing_runs(runs: list[PlannedRun]) -> None:
    """Refuse a run directory that holds a run of other settings (e.g. after changing a flag between invocations)."""
    from instanseg_scnp.comparison import differing_fields, setting_fields  # pandas, SciPy: not for --help

    for run in runs:
        if run.status == "new":
            continue
        saved = read_json(run.config.out / CONFIG)
        derived = {key: value for key, value in saved.get("derived", {}).items() if key != "data"}  # data as given
        differ = differing_fields(setting_fields(saved["config"], derived),
                                  setting_fields(json.loads(run.config.to_json())))
        if saved["config"].get("seed") != run.config.seed:
            differ["seed"] = (saved["config"].get("seed"), run.config.seed)
        if differ:
            details = ", ".join(f"{key}={old!r} (asked: {new!r})" for key, (old, new) in differ.items())
            raise ValueError(f"{run.config.out} was trained with {details}: choose another --out for these "
                             "settings, or delete that run")


def run_experiment(out: str | Path, *, targets: Sequence[str] = SCNP_TARGETS, seeds: int = 5,
                   windows: Sequence[int] = (3,), jobs: int = 1, progress: bool = False,
                   **settings: object) -> tuple[Path, str]:
    """Train every planned run that is not finished, ``jobs`` at a time, then compare them all.

    Parameters
    ----------
    out : path
        The experiment folder (module docstring).
    targets, seeds, windows, settings
        As :func:`plan_experiment`.
    jobs : int
        Runs trained side by side, each in its own process. On a CPU each gets
        ``cores // jobs`` torch threads; on a GPU they share the device.
    progress : bool
        A tqdm bar over the runs.

    Returns
    -------
    (Path, str)
        ``OUT/comparison`` and its Markdown report (:func:`instanseg_scnp.comparison.compare_runs`).

    Raises
    ------
    ExperimentError
        When a run failed (the others still finish); nothing is compared then.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    runs = plan_experiment(out, targets=targets, seeds=seeds, windows=windows, **settings)
    check_existing_runs(runs)
    todo = [run for run in runs if run.status != "finished"]
    logger.info("%d runs: %d finished earlier, %d to train (%d resumed), %d at a time", len(runs),
                len(runs) - len(todo), len(todo), sum(run.status == "resume" for run in todo), jobs)
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, len(os.sched_getaffinity(0)) // jobs) if hasattr(os, "sched_getaffinity") else None
    failures = []
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per run: no state shared with this one
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_train_one, run.config.to_json(), run.status, str(logs / f"{run.name}.log"),
                               threads if jobs > 1 else None): run for run in todo}
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="experiment",
                           unit="run", disable=not progress):
            run = futures[future]
            try:
                future.result()
                logger.info("%s: done", run.name)
            except Exception as error:  # one failed run must not stop the others
                logger.error("%s failed: %s (log: %s)", run.name, error, logs / f"{run.name}.log")
                failures.append(f"{run.name}: {error}")
    if failures:
        raise ExperimentError(f"{len(failures)} of {len(todo)} runs failed (logs in {logs}); fix the cause and run "
                              "the experiment again to finish them:\n  " + "\n  ".join(failures))
    from instanseg_scnp.comparison import compare_runs

    return compare_runs([run.config.out for run in runs], Path(out) / "comparison", overwrite=True)


def _train_one(config_json: str, status: str, log_path: str, threads: int | None) -> str:
    """Train, resume or restart one run in this (child) process, logging to ``log_path``."""
    import torch

    from instanseg_scnp.training import resume, train

    send_package_logs(logging.FileHandler(log_path), logging.INFO)
    if threads is not None:
        torch.set_num_threads(threads)
    config = TrainConfig.from_json(config_json)
    if status == "resume":
        resume(config.out, device=config.device, workers=config.workers)
    else:
        train(config, overwrite=status == "restart")
    return str(config.out)
