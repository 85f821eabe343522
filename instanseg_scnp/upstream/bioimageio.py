"""Export a run as a bioimage.io model package: for QuPath's InstanSeg extension and the model zoo.

The package holds the run's exported TorchScript model under upstream's file
name ``instanseg.pt`` (so upstream's ``InstanSeg`` class loads it from its
bioimage.io model folder, and QuPath's InstanSeg extension reads it), a test
input cut from the run's first test image with the labels the model gives it,
a cover (the test image beside its outlined prediction), a README and the
``rdf.yaml`` written by ``bioimageio.spec``. Its tensors are described as
upstream's own packages describe theirs: input ``raw`` (batch, channel, y, x),
percentile-normalized (0.1 and 99.9 per channel), with the pixel size the model
was trained at; output ``instance_segmentation`` (batch, one "nuclei" channel,
y, x).

Upstream's ``instanseg.utils.create_bioimageio_model.export_bioimageio`` is not
wrapped: it loads the model by name from upstream's own model folder, writes
``os.environ`` and the current directory, draws with matplotlib and needs
``bioio`` and ``bioimageio.core``. This module writes the same layout with
``bioimageio.spec`` alone (the ``bioimageio`` extra).
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import logging
import os
import re
import shutil
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile
import torch

from instanseg_scnp._files import atomic_directory, atomic_path, read_json
from instanseg_scnp._options import scnp_label
from instanseg_scnp.rundir import CONFIG, TORCHSCRIPT, require_run_dir
from instanseg_scnp.upstream._quiet import quiet_upstream
from instanseg_scnp.upstream.inference import MIN_INFERENCE_SIZE, load_model, prepare_image

logger = logging.getLogger(__name__)

__all__ = ["PERCENTILES", "TEST_SIZE", "export_bioimageio", "load_bioimageio", "require_bioimageio"]

TEST_SIZE = 256
"""Largest side of the package's test image (a centre crop of the run's first test image)."""
PERCENTILES = (0.1, 99.9)
"""Per-channel normalization of the input, as upstream's packages declare it (``scale_range``)."""
SCALE_RANGE_EPS = 1e-6
WEIGHTS = "instanseg.pt"
"""Upstream's ``download_model`` loads ``<bioimage.io folder>/<name>/instanseg.pt``: the same name here."""
CITATIONS = (
    ("InstanSeg: Goldsborough et al., an embedding-based instance segmentation algorithm optimized for accurate, "
     "efficient and portable cell segmentation (2024)", "10.48550/arXiv.2408.15954"),
    ("SCNP: Valverde, Papadopoulos, Larsen and Dahl, Same-Class Neighbor Penalization, CVPR 2026",
     "10.48550/arXiv.2603.18671"),
)


def require_bioimageio() -> None:
    """Raise an ImportError that says how to install the extra unless ``bioimageio.spec`` can be imported."""
    _spec()


def _spec():
    try:
        import bioimageio.spec
        from bioimageio.spec.model import v0_5
    except ImportError as error:
        raise ImportError("bioimage.io export needs bioimageio.spec: pip install 'instanseg-scnp[bioimageio]'") \
            from error
    return bioimageio.spec, v0_5


def _test_image(config: dict, image: np.ndarray | None) -> np.ndarray:
    """A centre crop of at most :data:`TEST_SIZE` a side of ``image``, default the run's first test image."""
    if image is None:
        from instanseg_scnp.data import open_dataset

        data = config["derived"].get("data", config["config"]["data"])
        image = open_dataset(data, required=("Test",))["Test"][0]["image"]
    image = np.asarray(image)
    starts = [max((n - TEST_SIZE) // 2, 0) for n in image.shape[:2]]
    crop = image[starts[0]:starts[0] + TEST_SIZE, starts[1]:starts[1] + TEST_SIZE]
    if min(crop.shape[:2]) < MIN_INFERENCE_SIZE:
        raise ValueError(f"the test image is {image.shape[:2]}; a bioimage.io test image needs at least "
                         f"{MIN_INFERENCE_SIZE} px a side")
    return crop


def scale_range(tensor: np.ndarray) -> np.ndarray:
    """bioimage.io's ``scale_range`` over (y, x) per channel: (x - p_lo) / (p_hi - p_lo + eps), (1, C, H, W)."""
    low, high = np.percentile(tensor, PERCENTILES, axis=(-2, -1), keepdims=True)
    return ((tensor - low) / (high - low + SCALE_RANGE_EPS)).astype(np.float32)


def _cover(raw: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """The test image beside its prediction's outlines (2:1, as bioimage.io recommends), as PNG."""
    import imageio.v3 as imageio
    from skimage.segmentation import find_boundaries

    rgb = np.moveaxis(scale_range(raw)[0], 0, -1).clip(0, 1)
    outlined = rgb.copy()
    outlined[find_boundaries(labels, mode="inner")] = (1.0, 0.85, 0.0)
    imageio.imwrite(path, (np.concatenate([rgb, outlined], axis=1) * 255).astype(np.uint8))


def _readme(name: str, config: dict, description: str) -> str:
    settings = config["config"]
    lines = [
        f"# {name}", "", description, "",
        "## Training", "",
        f"- data: {config['derived'].get('data', settings['data'])}",
        f"- SCNP: {scnp_label(settings['scnp'], settings['scnp_window'], settings['scnp_mode'])}",
        f"- losses: seed {settings['seed_loss']}, instance mask {settings['mask_loss']}",
        f"- preset {settings['preset']}, {settings['epochs']} epochs, seed {settings['seed']}",
        f"- pixel size: {config['derived'].get('pixel_size')} µm", "",
        "Trained with instanseg-scnp; SCNP is training-only, so the model is an ordinary InstanSeg model.", "",
        "## Use", "",
        "In QuPath, with the InstanSeg extension: choose this folder (or zip) as a local model.",
        "In Python: put this folder in upstream's bioimage.io model folder "
        "(`INSTANSEG_BIOIMAGEIO_PATH`) and call `instanseg.InstanSeg(\"<folder name>\")`, or load "
        f"`{WEIGHTS}` with `torch.jit.load` and pass it to `instanseg.InstanSeg`.", "",
        "## Validation", "",
        "The package's test input is a crop of the run's first test image; the test output is this model's labels "
        "on it. The run's own evaluation (F1, PQ, count and Betti errors on the test split) is in its run directory "
        "(`evaluation/summary.json`).", "",
        "## Cite", "",
        *[f"- {text}, https://doi.org/{doi}" for text, doi in CITATIONS],
    ]
    return "\n".join(lines) + "\n"


def export_bioimageio(run_dir: str | Path, output: str | Path, *, authors: Sequence[str] = (),
                      license: str = "Apache-2.0", image: np.ndarray | None = None, overwrite: bool = False) -> Path:
    """Write a run's exported model as a bioimage.io package: a folder, or a ``.zip`` file.

    Parameters
    ----------
    run_dir : path
        A finished run directory (``instanseg.pt`` and ``config.json``).
    output : path
        A folder to create, or a path ending in ``.zip`` for the zipped package.
    authors : sequence of str
        The package's authors (default: the current user's login name).
    license : str
        SPDX identifier of the model's licence.
    image : (H, W[, C]) ndarray, optional
        The image to cut the test input from (default: the run's first test
        image, read from its data; training passes the one it has loaded).
    overwrite : bool
        Replace an existing ``output``.

    Returns
    -------
    Path
        ``output``, written whole (built aside, then renamed into place) after
        ``bioimageio.spec`` validated it.
    """
    spec, v0_5 = _spec()
    run_dir = require_run_dir(Path(run_dir), CONFIG, TORCHSCRIPT)
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{str(output)!r} exists; pass overwrite=True (--overwrite) to replace it")
    config = read_json(run_dir / CONFIG)
    pixel_size = config["derived"].get("pixel_size")
    name = f"InstanSeg SCNP {re.sub(r'[^A-Za-z0-9_+ -]', '-', run_dir.resolve().name)}"  # the spec's characters
    image = _test_image(config, image)
    raw = prepare_image(image, channel_axis=-1 if image.ndim == 3 else None, normalize=False).numpy()
    model = load_model(run_dir)
    with torch.no_grad(), quiet_upstream():
        labels = model(torch.from_numpy(scale_range(raw)))
    settings = config["config"]
    description = (f"InstanSeg nucleus segmentation trained with "
                   f"{scnp_label(settings['scnp'], settings['scnp_window'], settings['scnp_mode'])} "
                   f"(Same-Class Neighbor Penalization) on {Path(str(config['derived'].get('data', 'data'))).name}.")
    staging = output.parent / f".{output.name}.files.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copyfile(run_dir / TORCHSCRIPT, staging / WEIGHTS)
        np.save(staging / "test-input.npy", raw)
        np.save(staging / "test-output_instance_segmentation.npy", labels.numpy().astype(np.float32))
        tifffile.imwrite(staging / "sample-input.tif", raw[0], photometric="minisblack")
        tifffile.imwrite(staging / "sample-output.tif", labels[0].numpy().astype(np.uint16))
        _cover(raw, labels[0, 0].numpy(), staging / "cover.png")
        (staging / "README.md").write_text(_readme(name, config, description))
        with _closing_what_spec_leaves_open():
            descr = _describe(v0_5, staging, name=name, description=description, config=config,
                              pixel_size=pixel_size, authors=list(authors) or [getpass.getuser()], license=license)
            if output.suffix == ".zip":
                with atomic_path(output) as tmp:
                    zipped = tmp.with_name(tmp.name + ".zip")  # bioimageio.spec wants the suffix
                    try:
                        Path(spec.save_bioimageio_package(descr, output_path=zipped)).replace(tmp)
                    finally:
                        zipped.unlink(missing_ok=True)
            else:
                with atomic_directory(output, overwrite=overwrite) as folder:
                    spec.save_bioimageio_package_as_folder(descr, output_path=folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote the bioimage.io package %s", output)
    return output


def load_bioimageio(path: str | Path):
    """``bioimageio.spec.load_description`` of a package folder or zip: its ``validation_summary`` says if it is valid."""
    spec, _ = _spec()
    path = Path(path)
    with _closing_what_spec_leaves_open():
        if path.suffix != ".zip":
            return spec.load_description(path)
        with zipfile.ZipFile(path) as archive:  # closed here, not left open inside the description
            return spec.load_description(archive)


@contextlib.contextmanager
def _closing_what_spec_leaves_open() -> Iterator[None]:
    """bioimageio.spec opens the test tensors to hash them and leaves them to the garbage collector."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def _describe(v0_5, folder: Path, *, name: str, description: str, config: dict, pixel_size: float | None,
              authors: list[str], license: str):
    """The ``ModelDescr`` of the files in ``folder`` (validated by ``bioimageio.spec`` as it is built)."""
    space = {"scale": float(pixel_size), "unit": "micrometer"} if pixel_size else {}
    inputs = v0_5.InputTensorDescr(
        id=v0_5.TensorId("raw"),
        axes=[v0_5.BatchAxis(),
              v0_5.ChannelAxis(channel_names=[v0_5.Identifier(f"C{c}") for c in range(3)]),
              *[v0_5.SpaceInputAxis(id=v0_5.AxisId(axis), size=v0_5.ParameterizedSize(min=MIN_INFERENCE_SIZE, step=1),
                                    **space) for axis in "yx"]],
        test_tensor=v0_5.FileDescr(source=folder / "test-input.npy"),
        sample_tensor=v0_5.FileDescr(source=folder / "sample-input.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
            axes=[v0_5.AxisId("y"), v0_5.AxisId("x")], min_percentile=PERCENTILES[0],
            max_percentile=PERCENTILES[1], eps=SCALE_RANGE_EPS))],
    )
    outputs = v0_5.OutputTensorDescr(
        id=v0_5.TensorId("instance_segmentation"),
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("nuclei")]),
              *[v0_5.SpaceOutputAxis(id=v0_5.AxisId(axis), size=v0_5.SizeReference(
                  tensor_id=v0_5.TensorId("raw"), axis_id=v0_5.AxisId(axis)), **space) for axis in "yx"]],
        test_tensor=v0_5.FileDescr(source=folder / "test-output_instance_segmentation.npy"),
        sample_tensor=v0_5.FileDescr(source=folder / "sample-output.tif"),
    )
    settings = config["config"]
    return v0_5.ModelDescr(
        name=name,
        description=description,
        authors=[v0_5.Author(name=author) for author in authors],
        cite=[v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi)) for text, doi in CITATIONS],
        license=v0_5.LicenseId(license),
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        covers=[v0_5.FileDescr(source=folder / "cover.png")],
        tags=["instanseg", "scnp", "nuclei", "instance-segmentation", "2d", "pytorch"],
        git_repo=v0_5.HttpUrl("https://github.com/instanseg/instanseg"),
        inputs=[inputs],
        outputs=[outputs],
        weights=v0_5.WeightsDescr(torchscript=v0_5.TorchscriptWeightsDescr(
            source=folder / WEIGHTS, pytorch_version=v0_5.Version(torch.__version__.split("+")[0]))),
        config={"instanseg_scnp": {"settings": settings, "pixel_size": pixel_size}},
    )
