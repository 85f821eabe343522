"""bioimage.io packages: valid for bioimageio.spec, loaded by upstream InstanSeg with the labels of instanseg.pt."""

from __future__ import annotations

import builtins
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.spec")
from instanseg import InstanSeg  # noqa: E402

from instanseg_scnp.cli import main  # noqa: E402
from instanseg_scnp.upstream import (  # noqa: E402
    ModelError,
    export_bioimageio,
    load_bioimageio,
    load_model,
    quiet_upstream,
    resolve_model_path,
    segment,
)
from instanseg_scnp.upstream.bioimageio import PERCENTILES, SCALE_RANGE_EPS, WEIGHTS  # noqa: E402


@pytest.fixture(scope="module")
def package(run_dir, tmp_path_factory):
    return export_bioimageio(run_dir, tmp_path_factory.mktemp("packages") / "tiny-scnp", authors=["A. Tester"])


def test_package_validates_and_describes_the_model(package, run_dir):
    descr = load_bioimageio(package)
    assert descr.validation_summary.status in ("valid-format", "passed"), descr.validation_summary.format()
    assert not [entry for entry in descr.validation_summary.details if entry.status == "failed"]
    assert [author.name for author in descr.authors] == ["A. Tester"]
    assert {"instanseg", "scnp"} <= set(descr.tags)
    assert any("2603.18671" in str(cite.doi) for cite in descr.cite)  # SCNP, Valverde et al.
    (axes,) = [tensor.axes for tensor in descr.inputs]
    assert axes[-1].scale == pytest.approx(float(load_model(run_dir).pixel_size))
    assert (package / WEIGHTS).read_bytes() == (run_dir / "instanseg.pt").read_bytes()


def test_test_tensors_are_the_models_labels_after_the_declared_normalization(package, run_dir):
    raw = np.load(package / "test-input.npy")
    expected = np.load(package / "test-output_instance_segmentation.npy")
    # bioimage.io's scale_range, restated: per channel over (y, x), (x - p_lo) / (p_hi - p_lo + eps)
    low = np.percentile(raw, PERCENTILES[0], axis=(2, 3), keepdims=True)
    high = np.percentile(raw, PERCENTILES[1], axis=(2, 3), keepdims=True)
    normalized = torch.from_numpy(((raw - low) / (high - low + SCALE_RANGE_EPS)).astype(np.float32))
    with torch.no_grad(), quiet_upstream():
        labels = torch.jit.load(str(run_dir / "instanseg.pt"))(normalized)
    np.testing.assert_array_equal(labels.numpy(), expected)


def test_upstream_loads_the_package_by_name_and_segments_like_instanseg_pt(package, run_dir, tmp_path, monkeypatch):
    models = tmp_path / "bioimageio_models"
    shutil.copytree(package, models / "tiny-scnp")
    monkeypatch.setenv("INSTANSEG_BIOIMAGEIO_PATH", str(models))  # where upstream looks for local packages
    image = np.load(package / "test-input.npy")[0]
    with quiet_upstream():
        labels = InstanSeg("tiny-scnp", device="cpu", verbosity=0).eval_small_image(
            torch.from_numpy(image), None, return_image_tensor=False)
    np.testing.assert_array_equal(labels.squeeze().numpy(), segment(load_model(run_dir), image, channel_axis=0))


def test_zipped_package_and_cli(run_dir, tmp_path, capsys):
    output = tmp_path / "model.zip"
    assert main(["export", str(run_dir), "--format", "bioimageio", "--output", str(output),
                 "--author", "B. Tester"]) == 0
    assert load_bioimageio(output).validation_summary.status in ("valid-format", "passed")
    assert not list(tmp_path.glob(".*"))  # no staging left behind
    assert main(["export", str(run_dir), "--format", "bioimageio", "--output", str(output)]) == 2
    assert "exists; pass overwrite=True" in capsys.readouterr().err


def test_missing_extra_says_what_to_install(run_dir, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_bioimageio(name, *args, **kwargs):
        if name.startswith("bioimageio"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bioimageio)
    with pytest.raises(ImportError, match=r"pip install 'instanseg-scnp\[bioimageio\]'"):
        export_bioimageio(run_dir, tmp_path / "package")
    assert not (tmp_path / "package").exists()


def test_train_with_export_bioimageio_writes_the_package(tmp_path):
    import instanseg_scnp

    result = instanseg_scnp.train(out=tmp_path / "run", epochs=2, hotstart=1, epoch_length=8, tile_size=64,
                                  layers=(8, 16), window_size=32, device="cpu", export="bioimageio")
    descr = load_bioimageio(result.run_dir / "bioimageio")
    assert descr.validation_summary.status in ("valid-format", "passed")
    assert (result.run_dir / "bioimageio" / WEIGHTS).read_bytes() == result.model_path.read_bytes()


def test_load_model_reads_the_package_folder_and_its_zip_as_the_runs_model(package, run_dir, tmp_path):
    archive = tmp_path / "tiny-scnp.zip"
    shutil.make_archive(str(archive.with_suffix("")), "zip", package)
    assert resolve_model_path(package) == package / WEIGHTS
    assert resolve_model_path(archive) == archive
    image = np.load(package / "test-input.npy")[0, 0]
    with quiet_upstream():
        expected = segment(torch.jit.load(str(run_dir / "instanseg.pt")), image, pixel_size=None)
    assert expected.max() > 0, "the model finds no cells: the comparison would prove nothing"
    for source in (package, archive):
        np.testing.assert_array_equal(segment(load_model(source), image, pixel_size=None), expected)


def test_load_model_refuses_a_package_whose_weights_were_replaced(package, tmp_path):
    broken = shutil.copytree(package, tmp_path / "broken")
    (broken / WEIGHTS).write_bytes((broken / WEIGHTS).read_bytes()[:-1])
    with pytest.raises(ModelError, match=r"instanseg\.pt' has SHA-256 .* but its rdf\.yaml says"):
        load_model(broken)
    archive = tmp_path / "broken.zip"
    shutil.make_archive(str(archive.with_suffix("")), "zip", broken)
    with pytest.raises(ModelError, match=r"broken\.zip!instanseg\.pt' has SHA-256"):
        load_model(archive)
