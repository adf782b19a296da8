"""The network of Fig. 3, the input normalisation and the model file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from voxloc import __version__
from voxloc.network.model import (
    DEFAULT_ARCH,
    build_model,
    fold_batchnorm,
    load_checkpoint,
    read_checkpoint,
    resolve_precision,
    save_checkpoint,
    select_device,
)
from voxloc.network.normalise import DEFAULT_NORMALISATION, normalise, row_median
from voxloc.voxels import decode, voxel_table

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
        "from voxloc.network.model import load_checkpoint\n"
        "m = load_checkpoint(sys.argv[1] + '/model.pt', 'cpu', 'float32')\n"
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


def _frames(seed: int = 5, shape: tuple[int, ...] = (3, 4, 37, 53)) -> np.ndarray:
    """Paper-like frames in photons with a few bright spots."""
    rng = np.random.default_rng(seed)
    frames = (rng.poisson(10.0, size=shape) + rng.normal(0, 3, size=shape)).astype(np.float32)
    frames[:, :, 10:13, 20:23] += 150.0
    frames[:, 1:3, 25:27, 5:8] += 80.0
    return frames


def test_row_median_equals_numpy_median():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 64, 65):
        a = rng.normal(10, 3, size=(5, n)).astype(np.float32)
        a[0] = 4.0  # ties
        got = row_median(a)
        np.testing.assert_array_equal(got, np.median(a, axis=1).astype(np.float32))
        assert got.dtype == np.float32


def test_folded_batchnorm_is_the_same_function():
    net = _trained_tiny_net()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.from_numpy(normalise(_frames(), META["normalisation"]))
    with torch.no_grad():
        np.testing.assert_allclose(folded.logits(x).numpy(), net.logits(x).numpy(), rtol=0, atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is kept


def test_precision_resolution(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == "float16"
    monkeypatch.setattr("voxloc.network.model.native_int8", lambda: True)
    assert resolve_precision("auto", cpu) == "int8"
    monkeypatch.setattr("voxloc.network.model.native_int8", lambda: False)
    monkeypatch.setattr("voxloc.network.model.native_bfloat16", lambda: True)
    assert resolve_precision("auto", cpu) == "bfloat16"
    monkeypatch.setattr("voxloc.network.model.native_bfloat16", lambda: False)
    assert resolve_precision("auto", cpu) == "float32"
    assert resolve_precision("int8", cpu) == "int8"
    with pytest.raises(ValueError, match="float16 needs a CUDA"):
        resolve_precision("float16", cpu)
    assert resolve_precision("int8", cuda) == "float16"  # one config for CPU and GPU nodes
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", cpu)


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_reduced_precision_stays_close_to_float32(tmp_path, precision):
    """bfloat16 and int8 logits follow float32's to a small fraction of their spread, and the
    detections at τ = 0.5 agree except for voxels whose ĉ lies near τ."""
    save_checkpoint(tmp_path / "model.pt", _trained_tiny_net(), META)
    ref = load_checkpoint(tmp_path / "model.pt", "cpu", "float32")
    low = load_checkpoint(tmp_path / "model.pt", "cpu", precision)
    assert low.precision == precision
    x = ref.prepare(_frames())
    a, b = ref.logits(x).numpy(), low.logits(x).numpy()
    spread = a.std()
    err = np.abs(b - a)
    assert err.mean() < {"bfloat16": 0.005, "int8": 0.015}[precision] * spread
    assert err.max() < {"bfloat16": 0.04, "int8": 0.1}[precision] * spread
    c_ref = a[:, 0::4] > 0
    flipped = c_ref != (b[:, 0::4] > 0)
    assert flipped.mean() < 0.01
    assert (np.abs(a[:, 0::4])[flipped] < err.max()).all()  # only logits near the threshold flip


def test_detect_gives_the_voxels_of_decode(tmp_path):
    save_checkpoint(tmp_path / "model.pt", _trained_tiny_net(), META)
    m = load_checkpoint(tmp_path / "model.pt", "cpu", "float32")
    frames = _frames()
    grid = m.grid(37, 53)
    c = m.predict(frames)[:, :, 0]
    for tau in np.quantile(c, [0.5, 0.9, 0.999]):  # about half, a tenth, a few of the voxels
        d = m.detect(m.prepare(frames), tau)
        got = voxel_table(d.t, d.k, d.i, d.j, d.zeta, d.prob, grid, frame_offset=7)
        want = decode(m.predict(frames, batch_frames=2), grid, tau, frame_offset=7)
        assert len(want) > 0
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=0, atol=1e-3)
    assert len(m.detect(m.prepare(frames), 1.0).t) == 0


def test_normalise_of_a_tensor_equals_the_numpy_path():
    """The GPU path normalises on the device: the same values (odd and even pixel counts)."""
    rng = np.random.default_rng(2)
    for shape in ((3, 4, 9, 11), (2, 4, 8, 10)):
        y = rng.gamma(3.0, 40.0, shape).astype(np.float32)
        want = normalise(y, DEFAULT_NORMALISATION)
        got = normalise(torch.from_numpy(y), DEFAULT_NORMALISATION)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(row_median(torch.from_numpy(y[0, 0])).numpy(), np.median(y[0, 0], axis=1))
