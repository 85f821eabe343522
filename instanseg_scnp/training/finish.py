"""Finishing a fitted run (rank 0 only): curves, the TorchScript export of the best epoch (and its bioimage.io
package with ``export="bioimageio"``), its evaluation."""

from __future__ import annotations

import logging
import math

from instanseg_scnp.evaluation import evaluate_items, load_segmenter, summary_line, write_evaluation
from instanseg_scnp.plots import plot_training_curves
from instanseg_scnp.rundir import BIOIMAGEIO, CURVES, EVALUATION, TORCHSCRIPT, replace_run_dir, write_metrics
from instanseg_scnp.training.fit import FitState
from instanseg_scnp.training.setup import Run
from instanseg_scnp.upstream import export_bioimageio, export_run

logger = logging.getLogger(__name__)


def finish(run: Run, state: FitState, *, progress: bool) -> dict:
    """Write the curves, export the best epoch and evaluate it on the held-out split; then the run in ``run.out``
    replaces the one in ``config.out`` if it was built beside it (``--overwrite``). Returns the evaluation summary."""
    config, out, items = run.config, run.out, run.dataset[run.eval_split]
    write_metrics(out, state.history)
    plot_training_curves(state.history, out / CURVES, title=f"{config.preset} preset, {config.setting_label}")
    model_path = export_run(out, example=items[0]["image"], overwrite=True)
    evaluation = evaluate_items(load_segmenter(model_path, device=str(run.process.device)), items, progress=progress)
    best_f1 = state.best_f1 if math.isfinite(state.best_f1) else None
    write_evaluation(evaluation, out / EVALUATION, overwrite=True,
                     extra={"split": run.eval_split, "best_epoch": state.best_epoch, "best_val_f1": best_f1})
    summary = evaluation.summary
    if config.export == "bioimageio":
        export_bioimageio(out, out / BIOIMAGEIO, image=items[0]["image"], overwrite=True)
    if out != config.out:
        replace_run_dir(out, config.out)
        logger.info("replaced the earlier run in %s", config.out)
    logger.info("best epoch %d (val F1 %.3f); held out, %s -> %s", state.best_epoch + 1, state.best_f1,
                summary_line(summary), config.out / TORCHSCRIPT)
    return summary
