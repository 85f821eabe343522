import pytest
import torch
from instanseg.utils.models.InstanSeg_UNet import InstanSeg_UNet

import instanseg_scnp
from instanseg_scnp.upstream import export_run, export_torchscript, quiet_upstream
from instanseg_scnp.rundir import RunDirError


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    model = InstanSeg_UNet(in_channels=3, out_channels=[[2, 2, 1]], layers=[16, 8])
    return instanseg_scnp.make_loss(n_sigma=2).initialize_pixel_classifier(model, MLP_width=5).eval()


def test_export_torchscript_round_trip_and_leaves_the_model_alone(network, tmp_path):
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    example = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    path = export_torchscript(network, tmp_path / "model.pt", pixel_size=0.5, example=example,
                              params={"seed_threshold": 0.0, "mask_threshold": 0.0})
    with quiet_upstream():
        loaded = torch.jit.load(str(path))
        assert loaded.pixel_size == 0.5 and loaded.default_seed_threshold == 0.0
        assert loaded(example.clone()).shape == (1, 1, 64, 64)
    assert all(torch.equal(before[name], tensor) for name, tensor in network.state_dict().items())
    assert network.training is False and next(network.parameters()).requires_grad


def test_export_torchscript_refuses_to_overwrite_and_bad_pixel_size(network, tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("previous export")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export_torchscript(network, path, pixel_size=0.5)
    assert path.read_text() == "previous export"
    with pytest.raises(ValueError, match="pixel_size must be a positive number of µm, got nan"):
        export_torchscript(network, tmp_path / "other.pt", pixel_size=float("nan"))
    assert not (tmp_path / "other.pt").exists()


def test_export_run_needs_a_run_directory(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        export_run(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "experiment_log.csv").write_text("model_str,InstanSeg_UNet\n")
    with pytest.raises(RunDirError, match=r"missing \['model_weights.pth'\]"):
        export_run(tmp_path / "half")
