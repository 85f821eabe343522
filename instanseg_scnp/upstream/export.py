"""Export a trained model to upstream InstanSeg's TorchScript format.

The exported file is upstream's own ``InstanSeg_Torchscript`` wrapper (network,
pixel classifier and postprocessing in one scripted module), so upstream
inference loads it unchanged::

    from instanseg import InstanSeg
    labels = InstanSeg(torch.jit.load("RUN_DIR/instanseg.pt")).eval_small_image(image, pixel_size)

SCNP is training-only: nothing of it is in the exported graph.
"""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from instanseg_scnp._files import atomic_path
from instanseg_scnp.data.dataset import is_pixel_size
from instanseg_scnp.rundir import BEST_WEIGHTS, EXPERIMENT_LOG, TORCHSCRIPT, require_run_dir
from instanseg_scnp.upstream._compat import upstream
from instanseg_scnp.upstream._quiet import quiet_upstream
from instanseg_scnp.upstream.inference import MIN_INFERENCE_SIZE, pad_for_inference, prepare_image

__all__ = ["POSTPROCESSING", "export_run", "export_torchscript"]

logger = logging.getLogger(__name__)

EXAMPLE_SIZE = 256
"""Side of the example input that the round-trip check runs (upstream traces at 256 too)."""

POSTPROCESSING = {"seed_threshold": 0.5}
"""Postprocessing defaults baked into the exported model where they differ from upstream's wrapper.

Validation picks the best epoch with upstream's training-time postprocessing
(``InstanSeg.postprocessing``), whose seed threshold is 0.5; the wrapper's 0.7
suits models trained for days and finds no cells in a model trained for
minutes. Users can still pass ``seed_threshold=`` at inference.
"""


def export_torchscript(
    model: torch.nn.Module,
    path: str | Path,
    *,
    pixel_size: float,
    n_sigma: int = 2,
    dim_in: int = 3,
    example: torch.Tensor | None = None,
    params: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Script a trained InstanSeg network in upstream's wrapper, check the round trip, save it.

    Parameters
    ----------
    model : torch.nn.Module
        The network with its pixel classifier attached (as after
        ``InstanSeg.initialize_pixel_classifier``); it is copied, not changed.
    path : path
        Where to write the ``.pt`` file; an existing file needs ``overwrite``.
    pixel_size : float
        The pixel size (µm) the model was trained at; upstream inference rescales
        images to it.
    n_sigma, dim_in : int
        As the model was built.
    example : (1, dim_in, H, W) torch.Tensor, optional
        Input for the round-trip check, at least 64 px a side (default: uniform
        noise, 256x256).
    params : dict, optional
        Postprocessing defaults of the exported model (upstream's ``params``:
        ``seed_threshold``, ``mask_threshold``, ``peak_distance``, ...); default
        :data:`POSTPROCESSING`.

    Returns
    -------
    Path
        ``path``, written atomically after the reloaded file reproduced the eager
        wrapper's labels on ``example``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (--overwrite) to replace it")
    if not is_pixel_size(pixel_size):
        raise ValueError(f"pixel_size must be a positive number of µm, got {pixel_size!r}")
    network = copy.deepcopy(model).cpu().eval()
    if example is None:
        example = torch.rand(1, dim_in, EXAMPLE_SIZE, EXAMPLE_SIZE, generator=torch.Generator().manual_seed(0))
    if min(example.shape[-2:]) < MIN_INFERENCE_SIZE:
        raise ValueError(f"example must be at least {MIN_INFERENCE_SIZE} px a side for upstream's model, "
                         f"got {tuple(example.shape)}")
    with quiet_upstream(), torch.no_grad():
        wrapper = upstream().InstanSeg_Torchscript(network, pixel_size=float(pixel_size), n_sigma=n_sigma,
                                        backbone_dim_in=dim_in, feature_engineering_function="0",
                                        params=dict(POSTPROCESSING if params is None else params))
        scripted = torch.jit.script(wrapper)
        expected = wrapper(example.clone())  # upstream clamps its input in place
        with atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp))
            reloaded = torch.jit.load(str(tmp), map_location="cpu")(example.clone())
            if not torch.equal(reloaded, expected):
                raise RuntimeError(f"the TorchScript export of {str(path)!r} does not reproduce the eager model: "
                                   f"{int((reloaded != expected).sum())} of {expected.numel()} labels differ")
    logger.info("exported %s (pixel size %.3g µm)", path, pixel_size)
    return path


def export_run(run_dir: str | Path, output: str | Path | None = None, *, example: np.ndarray | None = None,
               overwrite: bool = False) -> Path:
    """Export a run's best weights, rebuilt through upstream's ``load_model``, to TorchScript.

    Parameters
    ----------
    run_dir : path
        A run directory with ``experiment_log.csv`` and ``model_weights.pth``.
    output : path, optional
        Default ``RUN_DIR/instanseg.pt``.
    example : (H, W, C) ndarray, optional
        An image for the round-trip check, normalized as upstream inference does.
    overwrite : bool
        Replace an existing output file.
    """
    run_dir = require_run_dir(Path(run_dir), EXPERIMENT_LOG, BEST_WEIGHTS)
    try:
        with quiet_upstream():
            model, arguments = upstream().load_model(folder="", path=str(run_dir), device="cpu")
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as error:  # bad file
        raise ValueError(f"cannot rebuild the model from {str(run_dir / BEST_WEIGHTS)!r} and {EXPERIMENT_LOG} "
                         f"({type(error).__name__}: {error}); was a file truncated or edited?") from error
    pixel_size = arguments.get("pixel_size")
    if not is_pixel_size(pixel_size):
        raise ValueError(f"{run_dir / EXPERIMENT_LOG}: no requested_pixel_size; cannot export a model "
                         "without the pixel size it was trained at")
    tensor = None
    if example is not None:
        example = np.asarray(example)
        tensor, _ = pad_for_inference(prepare_image(example, channel_axis=-1 if example.ndim == 3 else None,
                                                    dim_in=int(arguments["dim_in"])))
    return export_torchscript(model, output or run_dir / TORCHSCRIPT, pixel_size=pixel_size,
                              n_sigma=int(arguments["n_sigma"]), dim_in=int(arguments["dim_in"]),
                              example=tensor, overwrite=overwrite)
