"""Fine-tuning: the weights, architecture and pixel size of ``--init`` sources, and runs that start from them."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from instanseg_scnp.rundir import BEST_WEIGHTS, CONFIG, TORCHSCRIPT
from instanseg_scnp.upstream import InitError, load_initial_weights

TINY = {"epochs": 1, "hotstart": 0, "epoch_length": 8, "tile_size": 64, "window_size": 32, "device": "cpu"}
"""A fine-tuning run of seconds; layers and norm come from the source."""

RDF_YAML = """\
format_version: 0.5.3
type: model
name: tiny InstanSeg test model
weights:
  torchscript:
    source: {source}
    sha256: {sha256}
"""


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package(run_dir, folder, source="weights/instanseg.pt"):
    """A minimal bioimage.io package: an rdf.yaml whose TorchScript weights are the run's instanseg.pt."""
    (folder / source).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / TORCHSCRIPT, folder / source)
    (folder / "rdf.yaml").write_text(RDF_YAML.format(source=source, sha256=_sha256(folder / source)))
    return folder


@pytest.fixture(scope="module")
def sources(run_dir, tmp_path_factory):
    """The same trained model as a run directory, its instanseg.pt, a bioimage.io folder and its .zip."""
    folder = _package(run_dir, tmp_path_factory.mktemp("package") / "tiny.bioimageio")
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in folder.rglob("*"):
            zipped.write(file, file.relative_to(folder))
    return {"run_dir": run_dir, "torchscript": run_dir / TORCHSCRIPT, "folder": folder, "zip": archive}


@pytest.mark.parametrize("kind", ["run_dir", "torchscript", "folder", "zip"])
def test_every_source_gives_the_run_weights_and_architecture(sources, kind):
    initial = load_initial_weights(sources[kind])
    reference = load_initial_weights(sources["run_dir"])
    assert initial.architecture == {"model_str": "InstanSeg_UNet", "layers": (8, 16), "dim_in": 3, "n_sigma": 2,
                                    "dim_out": 5, "mlp_width": 5, "cells_and_nuclei": False, "norm": "INSTANCE"}
    assert initial.pixel_size == pytest.approx(0.5)
    assert initial.network_state.keys() == reference.network_state.keys()
    assert all(torch.equal(initial.network_state[key], value) for key, value in reference.network_state.items())
    assert all(torch.equal(initial.classifier_state[key], value)
               for key, value in reference.classifier_state.items())
    hashed = sources[kind] / BEST_WEIGHTS if kind == "run_dir" else sources[kind]
    if kind == "folder":
        hashed = sources[kind] / "weights" / TORCHSCRIPT
    assert initial.sha256 == _sha256(hashed)


def test_model_before_the_first_step_segments_as_the_source(sources, cells, tmp_path):
    from instanseg_scnp import load_model, segment
    from instanseg_scnp.training import TrainConfig
    from instanseg_scnp.training.distributed import start
    from instanseg_scnp.training.setup import set_up
    from instanseg_scnp.upstream import export_torchscript, prepare_image

    config = TrainConfig(init=str(sources["zip"]), out=tmp_path / "run", **TINY)
    run = set_up(config, start("cpu"), out=config.out, overwrite=False, resuming=False)
    source = load_model(sources["torchscript"])
    image = cells[0][:128, :128]  # the round trip of an export on 256 px of noise takes half a minute
    tensor = prepare_image(image)
    with torch.no_grad():
        np.testing.assert_allclose(run.model.eval()(tensor).numpy(), source.fcn(tensor).numpy(), atol=1e-5)
    exported = load_model(export_torchscript(run.model, tmp_path / "start.pt", pixel_size=config.pixel_size,
                                             example=tensor))
    expected = segment(source, image, pixel_size=0.5)
    assert expected.max() > 0, "the source model finds no cells: the comparison would prove nothing"
    np.testing.assert_array_equal(segment(exported, image, pixel_size=0.5), expected)
    derived = json.loads((config.out / CONFIG).read_text())["derived"]
    assert derived["init"]["sha256"] == _sha256(sources["zip"])
    assert derived["init"]["source"] == str(sources["zip"])


def test_finetuned_run_exports_a_model_upstream_loads(sources, cells, tmp_path):
    import instanseg_scnp

    result = instanseg_scnp.train(init=sources["run_dir"], out=tmp_path / "fine", **TINY)
    saved = json.loads((result.run_dir / CONFIG).read_text())
    assert saved["config"]["layers"] == [8, 16] and saved["config"]["norm"] == "INSTANCE"  # not the preset's
    assert saved["config"]["mlp_width"] == 5
    assert saved["config"]["init"] == str(sources["run_dir"])
    assert saved["derived"]["init"]["sha256"] == _sha256(sources["run_dir"] / BEST_WEIGHTS)
    labels = instanseg_scnp.segment(instanseg_scnp.load_model(result.model_path), cells[0], pixel_size=0.5)
    assert labels.shape == cells[0].shape and labels.dtype == np.int32


@pytest.mark.parametrize(("flags", "message"), [
    ({"layers": (16, 32)}, r"--layers 16 32 differs from the --init model's layers 8 16"),
    ({"norm": "BATCH"}, r"--norm BATCH differs from the --init model's norm INSTANCE"),
    ({"mlp_width": 10}, r"--mlp-width 10 differs from the --init model's mlp_width 5"),
])
def test_explicit_architecture_that_differs_names_both(sources, flags, message):
    from instanseg_scnp.training import TrainConfig

    with pytest.raises(InitError, match=message):
        TrainConfig(init=str(sources["torchscript"]), **{**TINY, **flags})


def test_explicit_settings_are_checked_when_the_run_starts(sources, tmp_path):
    from instanseg_scnp.training import TrainConfig
    from instanseg_scnp.training.distributed import start
    from instanseg_scnp.training.setup import set_up

    # all four given: the config does not read the source; the run does before writing anything
    config = TrainConfig(init=str(sources["folder"]), layers=(8, 32), norm="INSTANCE", mlp_width=5, pixel_size=0.5,
                         out=tmp_path / "run", **TINY)
    with pytest.raises(InitError, match=r"--layers 8 32 differs from the --init model's layers 8 16"):
        set_up(config, start("cpu"), out=config.out, overwrite=False, resuming=False)
    assert not config.out.exists()


def _truncated(path, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:2000])
    return broken


@pytest.mark.parametrize(("make", "names"), [
    (lambda sources, tmp: tmp / "missing.pt", "missing.pt"),
    (lambda sources, tmp: _truncated(sources["torchscript"], tmp), "broken.pt"),
    (lambda sources, tmp: (tmp / "notes.txt").write_text("not a model") and tmp / "notes.txt", "notes.txt"),
    (lambda sources, tmp: tmp, "has no rdf.yaml"),
    (lambda sources, tmp: _package(sources["run_dir"], tmp / "p").joinpath("weights", TORCHSCRIPT).write_bytes(b"x")
     and tmp / "p", "has SHA-256"),
    (lambda sources, tmp: (tmp / "rdf.yaml").write_text("weights: {}\n") and tmp, "rdf.yaml"),
])
def test_missing_or_corrupt_source_is_one_line_naming_the_file(sources, tmp_path, make, names):
    source = make(sources, tmp_path)
    with pytest.raises(InitError, match=names) as error:
        load_initial_weights(source)
    assert "\n" not in str(error.value)
