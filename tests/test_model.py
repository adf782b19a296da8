"""The network of Fig. 3, the input normalisation and the model file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voxloc import __version__  # noqa: E402
from voxloc.model import (  # noqa: E402
    DEFAULT_ARCH,
    build_model,
    load_checkpoint,
    normalise,
    read_checkpoint,
    save_checkpoint,
    select_device,
)

TINY = {"widths": [6, 5, 7]}


def test_default_architecture_is_the_authors():
    net = build_model()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (4, 16), (16, 32), (32, 64), (64, 128), (128, 64), (64, 32), (32, 16), (16, 16)
    ]  # fmt: skip
    assert [c.kernel_size for c in convs] == [(5, 5)] * 2 + [(3, 3)] * 6
    assert len([m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]) == 7  # not the head
    assert DEFAULT_ARCH["widths"] == [16, 32, 64, 128, 64, 32, 16]


@pytest.mark.parametrize("shape", [(37, 53), (1, 1), (64, 64)])
def test_output_shape_for_any_image_size(shape):
    net = build_model(TINY).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 4, *shape))
    assert out.shape == (2, 4, 4, *shape)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_head_channel_4k_plus_q_is_value_q_of_plane_k():
    net = build_model(TINY).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.arange(16, dtype=torch.float32))
        logits = net.logits(torch.randn(1, 4, 5, 3))
    for k in range(4):
        for q in range(4):
            assert torch.all(logits[0, k, q] == 4 * k + q)
    out = net(torch.zeros(1, 4, 5, 3))
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(0.5)  # sigmoid(0)


def test_unknown_architecture_key_is_an_error():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"width": [8]})


def test_normalise_subtracts_the_plane_median_and_divides_by_the_scale():
    frame = np.full((1, 4, 5, 5), 10.0, dtype=np.float32)
    frame[0, 2, 1, 3] = 110.0
    frame[0, 3] += 40.0  # another background level in plane 4
    out = normalise(frame, {"method": "median_background", "scale_photons": 100.0})
    expected = np.zeros((1, 4, 5, 5), dtype=np.float32)
    expected[0, 2, 1, 3] = 1.0  # (110 - 10) / 100
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32
    # a different background leaves the input unchanged; 'none' only scales
    np.testing.assert_array_equal(normalise(frame + 25.0, {"scale_photons": 100.0}), expected)
    raw = normalise(frame, {"method": "none", "scale_photons": 10.0})
    assert raw[0, 0, 0, 0] == 1.0 and raw[0, 2, 1, 3] == 11.0
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(frame, {"method": "mean", "scale_photons": 1.0})


def test_select_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device().type == "cpu"
    with pytest.raises(RuntimeError, match="no GPU"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device().type == "cuda"
    assert select_device("cpu").type == "cpu"


META = {
    "arch": {"n_planes": 4, "widths": [6, 5, 7], "n_large_kernels": 2},
    "normalisation": {"method": "median_background", "scale_photons": 100.0},
    "grid": {"px_size_nm": 160.0, "plane_z_nm": [0.0, 350.0, 800.0, 1250.0], "z_range_nm": [-175.0, 1475.0]},
    "psf": {"a_prime": 5e7, "b": 0.0, "r0_nm": 133.0, "D_nm": 302.0, "A": 7.37e-4, "B": 6.27e-3},
    "train": {"epochs": 1, "lr": np.float64(1e-3)},  # numpy scalars are stored as builtins
}


def _trained_tiny_net() -> torch.nn.Module:
    """A tiny net whose BatchNorm running statistics are not the defaults."""
    torch.manual_seed(0)
    net = build_model(META["arch"])
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 4, 9, 11) * 3 + 1)
    return net.eval()


def test_checkpoint_loads_in_a_fresh_process_with_identical_outputs(tmp_path):
    net = _trained_tiny_net()
    save_checkpoint(tmp_path / "model.pt", net, META)
    rng = np.random.default_rng(5)
    frames = (rng.poisson(10.0, size=(3, 4, 37, 53)) + rng.normal(0, 3, size=(3, 4, 37, 53))).astype(
        np.float32
    )
    frames[:, :, 10:13, 20:23] += 150.0
    np.save(tmp_path / "frames.npy", frames)
    with torch.no_grad():
        expected = net(torch.from_numpy(normalise(frames, META["normalisation"]))).numpy()
    code = (
        "import sys, numpy as np, torch\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "from voxloc.model import load_checkpoint\n"
        "m = load_checkpoint(sys.argv[1] + '/model.pt', 'cpu')\n"
        "np.save(sys.argv[1] + '/out.npy', m.predict(np.load(sys.argv[1] + '/frames.npy'), batch_frames=2))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (3, 4, 4, 37, 53)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_checkpoint_metadata_round_trip(tmp_path):
    net = _trained_tiny_net()
    save_checkpoint(tmp_path / "model.pt", net, META, epoch=3)
    raw = torch.load(tmp_path / "model.pt", weights_only=True)  # safe loading works
    assert raw["epoch"] == 3
    m = load_checkpoint(tmp_path / "model.pt", "cpu")
    assert not m.net.training
    assert m.meta["voxloc_version"] == __version__
    assert m.meta["train"]["lr"] == 1e-3 and type(m.meta["train"]["lr"]) is float
    assert m.normalisation == META["normalisation"]
    grid = m.grid(96, 80)
    assert (grid.height, grid.width, grid.px_size_nm) == (96, 80, 160.0)
    assert grid.plane_z_nm == (0.0, 350.0, 800.0, 1250.0)
    for key, value in net.state_dict().items():
        assert torch.equal(m.net.state_dict()[key], value)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no leftovers


def test_not_a_model_file_is_an_error(tmp_path):
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a voxloc model file"):
        read_checkpoint(tmp_path / "other.pt")
