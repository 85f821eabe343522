"""Start training from an exported InstanSeg model: its weights, architecture and pixel size.

``instanseg-scnp train --init SOURCE`` (``TrainConfig(init=SOURCE)``) reads one of

- an exported TorchScript file: our ``instanseg.pt``, or any file of upstream's
  ``InstanSeg_Torchscript`` wrapper, whose ``fcn`` is the network (traced, with
  the pixel classifier among its weights) and ``pixel_classifier`` the pixel
  classifier;
- a run directory: its ``model_weights.pth`` and ``experiment_log.csv``
  through upstream's ``load_model`` (else its ``instanseg.pt``);
- a bioimage.io model package, a folder or a ``.zip`` with an ``rdf.yaml``
  whose ``weights: torchscript: source:`` names the TorchScript file (upstream's
  released models are such packages).

The architecture comes from the weights: the UNet widths from the encoder's
shapes, the norm from the layers its state holds. Only what ``instanseg-scnp
train`` builds can be fine-tuned (an ``InstanSeg_UNet`` nucleus model with 3
input channels, 2 sigma channels, one seed channel and upstream's default
pixel classifier); anything else is refused with what differs.
"""

from __future__ import annotations

import functools
import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from instanseg_scnp._files import sha256_of
from instanseg_scnp._logs import first_line
from instanseg_scnp.data.dataset import is_pixel_size
from instanseg_scnp.rundir import BEST_WEIGHTS, EXPERIMENT_LOG, TORCHSCRIPT
from instanseg_scnp.upstream._compat import upstream
from instanseg_scnp.upstream._quiet import quiet_upstream
from instanseg_scnp.upstream.package import (
    RDF,
    PackageError,
    is_package_zip,
    package_folder_weights,
    package_zip_weights,
)

__all__ = ["SUPPORTED_ARCHITECTURE", "InitError", "InitialModel", "check_architecture", "initialize_model",
           "load_initial_weights"]

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURE = {"model_str": "InstanSeg_UNet", "dim_in": 3, "n_sigma": 2, "dim_out": 5,
                          "cells_and_nuclei": False}
"""What ``instanseg-scnp train`` builds besides ``layers``, ``norm`` and ``mlp_width``: a source must have the
same."""

_CLASSIFIER = "pixel_classifier."
_NORMS = ("BATCH", "INSTANCE", "None")


class InitError(ValueError):
    """A ``--init`` source that is missing, unreadable or not a model ``instanseg-scnp train`` can start from."""


@dataclass(frozen=True, eq=False)
class InitialModel:
    """The weights and settings of the model a run starts from.

    Attributes
    ----------
    source : str
        The path as given (a file, run directory or bioimage.io package).
    file : str
        The file the weights were read from (inside a ``.zip``: ``ZIP!member``).
    sha256 : str
        SHA-256 of the file given, or for a folder of the weights file read.
    architecture : dict
        ``layers`` (tuple), ``norm``, ``mlp_width`` and the keys of :data:`SUPPORTED_ARCHITECTURE`.
    pixel_size : float or None
        The pixel size (µm) the model works at.
    network_state, classifier_state : dict
        The network's state dict (without the pixel classifier) and the pixel classifier's.
    """

    source: str
    file: str
    sha256: str
    architecture: dict
    pixel_size: float | None
    network_state: dict = field(repr=False)
    classifier_state: dict = field(repr=False)

    def record(self) -> dict:
        """What ``config.json`` records of the source (its ``derived.init``)."""
        return {"source": self.source, "file": self.file, "sha256": self.sha256, "pixel_size": self.pixel_size,
                "layers": list(self.architecture["layers"]), "norm": self.architecture["norm"]}


def load_initial_weights(source: str | Path) -> InitialModel:
    """The weights, architecture and pixel size of an exported model, run directory or bioimage.io package.

    Raises
    ------
    InitError
        ``source`` does not exist, cannot be read (named in the one-line message),
        or holds a model whose architecture ``instanseg-scnp train`` does not build.
    """
    path = Path(str(source)).expanduser()
    if not path.exists():
        raise InitError(f"--init {str(path)!r} does not exist: give an exported {TORCHSCRIPT}, a run directory "
                        f"or a bioimage.io package (folder or .zip with {RDF})")
    stat = path.stat()
    return _load(str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(source))


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime_ns: int, size: int, given: str) -> InitialModel:
    """:func:`load_initial_weights` of one version of a file (the config and the setup of a run share it)."""
    del mtime_ns, size  # part of the cache key only
    source = Path(path)
    if source.is_dir():
        if (source / RDF).is_file():
            return _from_package(source, given)
        if (source / BEST_WEIGHTS).is_file() and (source / EXPERIMENT_LOG).is_file():
            return _from_run_dir(source, given)
        if (source / TORCHSCRIPT).is_file():
            return _from_torchscript(source / TORCHSCRIPT, sha256_of(source / TORCHSCRIPT), given)
        raise InitError(f"--init {str(source)!r} has no {RDF}, {BEST_WEIGHTS} + {EXPERIMENT_LOG} or {TORCHSCRIPT}: "
                        "give an exported model, a finished run directory or a bioimage.io package")
    if source.name == RDF:
        return _from_package(source.parent, given)
    if is_package_zip(source):
        return _from_package(source, given)
    return _from_torchscript(source, sha256_of(source), given)


def check_architecture(initial: InitialModel, *, layers: tuple[int, ...] | None = None,
                       norm: str | None = None, mlp_width: int | None = None) -> None:
    """Raise :class:`InitError` naming both values if an explicit ``layers``, ``norm`` or ``mlp_width`` differs
    from the source's."""
    for name, given in (("layers", None if layers is None else tuple(layers)), ("norm", norm),
                        ("mlp_width", mlp_width)):
        if given is not None and given != initial.architecture[name]:
            shown = " ".join(map(str, given)) if name == "layers" else given
            source = initial.architecture[name]
            source = " ".join(map(str, source)) if name == "layers" else source
            flag = "--" + name.replace("_", "-")
            raise InitError(f"{flag} {shown} differs from the --init model's {name} {source} "
                            f"({initial.source}); leave {flag} out to take the source's")


def initialize_model(model: torch.nn.Module, initial: InitialModel) -> torch.nn.Module:
    """Load ``initial``'s weights into ``model`` (upstream's network with its pixel classifier attached), in place."""
    missing, unexpected = model.load_state_dict(initial.network_state, strict=False)
    missing = [key for key in missing if not key.startswith(_CLASSIFIER)]
    if missing or unexpected:
        raise InitError(f"--init {initial.source!r}: its weights do not fit the network built for it "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.pixel_classifier.load_state_dict(initial.classifier_state)
    return model


def _from_run_dir(run_dir: Path, given: str) -> InitialModel:
    weights = run_dir / BEST_WEIGHTS
    try:
        with quiet_upstream():
            model, arguments = upstream().load_model(folder="", path=str(run_dir), device="cpu")
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as error:
        raise InitError(f"--init: cannot read the model of {str(weights)!r} and {EXPERIMENT_LOG} "
                        f"({first_line(error)}); was a file truncated or edited?") from error
    pixel_size = arguments.get("pixel_size")
    return _initial(model.state_dict(), given, str(weights), sha256_of(weights),
                    pixel_size=float(pixel_size) if is_pixel_size(pixel_size) else None,
                    cells_and_nuclei=bool(arguments.get("cells_and_nuclei", False)),
                    model_str=str(arguments.get("model_str")))


def _from_torchscript(file: Path | io.BytesIO, sha256: str, given: str, name: str | None = None) -> InitialModel:
    name = name or str(file)
    try:
        with quiet_upstream():
            model = torch.jit.load(file, map_location="cpu")
    except (RuntimeError, ValueError, OSError, EOFError) as error:  # what torch raises on a truncated file
        raise InitError(f"--init {name!r} is not a readable TorchScript model ({first_line(error)}); was it "
                        "truncated?") from error
    missing = [part for part in ("fcn", "pixel_classifier") if not hasattr(model, part)]
    if missing:
        raise InitError(f"--init {name!r} is not an exported InstanSeg model (it has no {', '.join(missing)})")
    state = {key: value.clone() for key, value in model.fcn.state_dict().items()}
    for key, value in model.pixel_classifier.state_dict().items():
        state.setdefault(_CLASSIFIER + key, value.clone())
    pixel_size = getattr(model, "pixel_size", None)
    return _initial(state, given, name, sha256, pixel_size=float(pixel_size) if is_pixel_size(pixel_size) else None,
                    cells_and_nuclei=bool(getattr(model, "cells_and_nuclei", False)),
                    model_str=getattr(model.fcn, "original_name", "InstanSeg_UNet"))


def _from_package(path: Path, given: str) -> InitialModel:
    """A package folder (its weights file hashed) or ``.zip`` (the zip hashed)."""
    try:
        if path.is_dir():
            return _from_torchscript(*package_folder_weights(path), given)
        name, data = package_zip_weights(path)
    except PackageError as error:
        raise InitError(f"--init {error}") from error
    return _from_torchscript(io.BytesIO(data), sha256_of(path), given, name=name)


def _initial(state: dict, given: str, file: str, sha256: str, *, pixel_size: float | None, cells_and_nuclei: bool,
             model_str: str) -> InitialModel:
    """The architecture read from ``state``'s shapes, checked against what ``instanseg-scnp train`` builds."""
    network = {key: value for key, value in state.items() if not key.startswith(_CLASSIFIER)}
    classifier = {key[len(_CLASSIFIER):]: value for key, value in state.items() if key.startswith(_CLASSIFIER)}
    layers, level = [], 0
    while f"encoder.{level}.conv1.0.weight" in network:
        layers.append(int(network[f"encoder.{level}.conv1.0.weight"].shape[0]))
        level += 1
    heads = sorted(key for key in network if key.startswith("decoders.0.final_block.") and key.endswith(".0.weight"))
    if model_str != "InstanSeg_UNet" or not layers or not heads or "fc1.weight" not in classifier:
        raise InitError(f"--init {file!r} holds a {model_str} model; instanseg-scnp fine-tunes InstanSeg_UNet "
                        "models with upstream's pixel classifier only")
    architecture = {
        "model_str": model_str, "layers": tuple(layers),
        "dim_in": int(network["encoder.0.conv1.0.weight"].shape[1]),
        "n_sigma": int(network[heads[1]].shape[0]) if len(heads) == 3 else -1,
        "dim_out": sum(int(network[key].shape[0]) for key in heads),
        "mlp_width": int(classifier["fc1.weight"].shape[0]),
        "cells_and_nuclei": cells_and_nuclei,
    }
    different = {name: architecture[name] for name, value in SUPPORTED_ARCHITECTURE.items()
                 if architecture[name] != value}
    if different:
        raise InitError(f"--init {file!r} is a model instanseg-scnp cannot train: it has "
                        + ", ".join(f"{name}={value!r}" for name, value in different.items())
                        + "; instanseg-scnp trains " + ", ".join(f"{name}={SUPPORTED_ARCHITECTURE[name]!r}"
                                                                 for name in different))
    architecture["norm"] = _norm(network, architecture, file)
    logger.info("--init %s: %s, layers %s, norm %s, pixel size %s µm", given, model_str, layers, architecture["norm"],
                pixel_size)
    return InitialModel(str(given), file, sha256, architecture, pixel_size, network, classifier)


def _norm(network: dict, architecture: dict, file: str) -> str:
    """The norm whose network has exactly ``network``'s weights and shapes."""
    from instanseg_scnp.upstream.training import build_model

    shapes = {key: tuple(value.shape) for key, value in network.items()}
    for norm in _NORMS:
        with torch.random.fork_rng():  # building draws initial weights: leave the caller's RNG alone
            built = build_model({"model_str": architecture["model_str"], "dim_in": architecture["dim_in"],
                                 "n_sigma": architecture["n_sigma"], "dim_out": architecture["dim_out"],
                                 "dim_coords": 2, "dim_seeds": 1, "layers": architecture["layers"], "norm": norm,
                                 "dropprob": 0.0, "multihead": False, "cells_and_nuclei": False,
                                 "feature_engineering": "0", "mlp_width": architecture["mlp_width"]})
        if {key: tuple(value.shape) for key, value in built.state_dict().items()} == shapes:
            return norm
    raise InitError(f"--init {file!r}: its UNet {list(architecture['layers'])} matches none of the norms "
                    f"{', '.join(_NORMS)} upstream builds")
