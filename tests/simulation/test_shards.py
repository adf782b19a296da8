"""HDF5 shards: seeding, schema, partial reads, atomic writes, errors (and the io helpers)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

from voxloc import provenance
from voxloc.errors import InputError
from voxloc.io import atomic_output, write_tiff
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.physics.psf import PSFParams
from voxloc.simulation import shards
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.shards import (
    read_settings,
    read_shard,
    shard_attrs,
    shard_length,
    simulate_shard,
    write_shard,
)
from voxloc.simulation.simulate import simulate_frames

N_FRAMES = 6


def small_settings() -> SimulationSettings:
    physics = Microscope(
        psf=PSFParams(b=1.5, r0_nm=140.0),
        plane_z_nm=(0.0, 350.0, 800.0, 1250.0),
        px_size_nm=160.0,
        noise=NoiseModel("physical", background=4.0, read_noise_var=2.0, em_gain=30.0, baseline_adu=100.0),
        integrate_pixels=True,
        transmission=(0.3, 0.2, 0.3, 0.2),
    )
    return SimulationSettings(
        physics, height=8, width=10, n_molecules=(1, 4), photons_range=(2000.0, 4500.0), drift_max_nm=30.0
    )


def make(path, seed=1, dataset="train", index=0, n=N_FRAMES, settings=None):
    simulate_shard(path, n, settings or small_settings(), seed=seed, dataset=dataset, index=index)
    return read_shard(path)


def test_same_seed_dataset_index_reproduces(tmp_path):
    a = make(tmp_path / "a.h5")
    b = make(tmp_path / "sub" / "b.h5")  # parent directories are created
    np.testing.assert_array_equal(a.frames, b.frames)
    pd.testing.assert_frame_equal(a.emitters, b.emitters)
    np.testing.assert_array_equal(a.drift_nm, b.drift_nm)


@pytest.mark.parametrize("change", [{"index": 1}, {"dataset": "val"}, {"seed": 2}])
def test_other_index_dataset_or_seed_differs(tmp_path, change):
    a = make(tmp_path / "a.h5")
    b = make(tmp_path / "b.h5", **change)
    assert not np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.drift_nm, b.drift_nm)
    assert not a.emitters.equals(b.emitters)


def test_seed_sequence_is_stable():
    # (seed, dataset, index) -> the same entropy on every run; other inputs -> other entropy
    s = shards.shard_seed_sequence(1, "train", 0)
    assert s.entropy == shards.shard_seed_sequence(1, "train", 0).entropy
    others = [(2, "train", 0), (1, "val", 0), (1, "train", 1)]
    assert all(shards.shard_seed_sequence(*o).entropy != s.entropy for o in others)


def test_schema(tmp_path):
    path = tmp_path / "shard-0003.h5"
    st = small_settings()
    simulate_shard(path, N_FRAMES, st, seed=17, dataset="train", index=3)
    with h5py.File(path, "r") as h5:
        frames = h5["frames"]
        assert frames.shape == (N_FRAMES, 4, 8, 10)
        assert frames.dtype == np.float32
        assert frames.chunks == (1, 4, 8, 10)  # one frame per chunk
        assert frames.compression is not None
        assert frames.attrs["axes"] == "TPYX"
        assert frames.attrs["units"] == "ADU"
        em = h5["emitters"]
        assert em.dtype.names == ("frame", "x_nm", "y_nm", "z_nm", "photons")
        assert em.dtype["frame"] == np.int32
        for c in ("x_nm", "y_nm", "z_nm", "photons"):
            assert em.dtype[c] == np.float32
        assert "photons" in em.attrs["units"]
        assert np.all((em["photons"] >= 2000.0) & (em["photons"] <= 4500.0))
        offsets = h5["emitter_offsets"][()]
        assert offsets.shape == (N_FRAMES + 1,) and offsets.dtype == np.int64
        assert offsets[0] == 0 and offsets[-1] == em.shape[0]
        frame = em["frame"]
        for t in range(N_FRAMES):
            np.testing.assert_array_equal(frame[offsets[t] : offsets[t + 1]], t)
            assert 1 <= offsets[t + 1] - offsets[t] <= 4
        drift = h5["drift_nm"][()]
        assert drift.shape == (N_FRAMES, 4, 2) and drift.dtype == np.float32
        np.testing.assert_array_equal(drift[:, 0], 0.0)
        assert np.abs(drift).max() <= 30.0
        attrs = dict(h5.attrs)
    expected_keys = {
        "psf.a_prime": 5.0e7,
        "psf.b": 1.5,
        "psf.r0_nm": 140.0,
        "psf.D_nm": 302.0,
        "psf.A": 7.37e-4,
        "psf.B": 6.27e-3,
        "transmission": [0.3, 0.2, 0.3, 0.2],
        "noise.kind": "physical",
        "noise.background": 4.0,
        "noise.read_noise_var": 2.0,
        "noise.em_gain": 30.0,
        "noise.sensitivity_e_per_adu": 1.0,
        "noise.baseline_adu": 100.0,
        "noise.quantize": False,
        "grid.height": 8,
        "grid.width": 10,
        "grid.px_size_nm": 160.0,
        "grid.plane_z_nm": [0.0, 350.0, 800.0, 1250.0],
        "sim.n_molecules": [1, 4],
        "sim.photons": [2000.0, 4500.0],
        "sim.drift_max_nm": 30.0,
        "sim.integrate_pixels": True,
        "seed": 17,
        "dataset": "train",
        "shard_index": 3,
        "n_frames": N_FRAMES,
        **provenance(),
    }
    for key, value in expected_keys.items():
        assert key in attrs, key
        got = attrs[key]
        got = got.tolist() if isinstance(got, np.ndarray) else got
        assert got == value, (key, got, value)
    assert "settings_json" in attrs and "seed_entropy" in attrs
    # the stored layout: the microscope's pixel and planes under grid, its pixel sampling under sim
    doc = json.loads(attrs["settings_json"])
    assert list(doc) == ["grid", "psf", "transmission", "noise", "sim"]
    assert list(doc["grid"]) == ["height", "width", "px_size_nm", "plane_z_nm"]
    assert doc["psf"] == st.physics.psf_dict() == PSFParams(b=1.5, r0_nm=140.0).to_dict()
    assert doc["transmission"] == [0.3, 0.2, 0.3, 0.2]
    assert list(doc["sim"]) == ["n_molecules", "photons", "drift_max_nm", "integrate_pixels"]
    assert shard_attrs(path)["grid.plane_z_nm"] == [0.0, 350.0, 800.0, 1250.0]
    assert shard_length(path) == N_FRAMES


def test_read_shard_range_renumbers(tmp_path):
    path = tmp_path / "s.h5"
    full = make(path)
    em = full.emitters
    part = read_shard(path, 2, 5)
    assert part.frames.shape == (3, 4, 8, 10)
    np.testing.assert_array_equal(part.frames, full.frames[2:5])
    np.testing.assert_array_equal(part.drift_nm, full.drift_nm[2:5])
    want = em[(em["frame"] >= 2) & (em["frame"] < 5)].reset_index(drop=True).copy()
    want["frame"] -= 2
    pd.testing.assert_frame_equal(part.emitters.reset_index(drop=True), want)
    assert part.emitters["frame"].min() == 0 and part.emitters["frame"].max() == 2
    # stop beyond the end is clipped, an empty range is empty
    tail = read_shard(path, 4, 100)
    assert tail.frames.shape[0] == 2
    assert read_shard(path, 3, 3).frames.shape[0] == 0
    assert len(read_shard(path, 3, 3).emitters) == 0


def test_read_settings_round_trip(tmp_path):
    path = tmp_path / "s.h5"
    st = small_settings()
    simulate_shard(path, 2, st, seed=0, dataset="train", index=0)
    back = read_settings(path)
    assert back == st
    assert back.physics.transmission == (0.3, 0.2, 0.3, 0.2) and back.photons_range == (2000.0, 4500.0)


def test_settings_without_transmission_are_equal_shares():
    # settings stored before the transmission existed: every plane got the same share
    d = shards.settings_to_dict(small_settings())
    del d["transmission"]
    assert shards.settings_from_dict(d).physics.transmission == (0.25, 0.25, 0.25, 0.25)


def test_noise_none_shard_is_expected_image(tmp_path):
    from voxloc.simulation.simulate import expected_frames

    st = SimulationSettings(Microscope(noise=NoiseModel("none")), height=6, width=6, n_molecules=(2, 2))
    sim = make(tmp_path / "s.h5", settings=st, n=3)
    np.testing.assert_array_equal(sim.frames, expected_frames(sim.emitters, sim.drift_nm, st))
    with h5py.File(tmp_path / "s.h5", "r") as h5:
        assert h5["frames"].attrs["units"] == "photons"


def test_batched_simulation_numbers_frames(tmp_path, monkeypatch):
    # several simulation batches per shard: emitters keep their absolute frame numbers
    monkeypatch.setattr(shards, "SIM_BATCH", 3)
    path = tmp_path / "s.h5"
    st = SimulationSettings(Microscope(noise=NoiseModel("none")), height=6, width=6, n_molecules=(2, 2))
    sim = make(path, settings=st, n=7)
    np.testing.assert_array_equal(np.bincount(sim.emitters["frame"], minlength=7), 2)
    from voxloc.simulation.simulate import expected_frames

    np.testing.assert_array_equal(sim.frames, expected_frames(sim.emitters, sim.drift_nm, st))


def test_write_shard_round_trip(tmp_path):
    st = small_settings()
    sim = simulate_frames(3, st, np.random.default_rng(0))
    path = tmp_path / "w.h5"
    write_shard(path, sim, st, source="test")
    back = read_shard(path)
    np.testing.assert_array_equal(back.frames, sim.frames)
    np.testing.assert_array_equal(back.drift_nm, sim.drift_nm)
    pd.testing.assert_frame_equal(back.emitters, sim.emitters)
    assert shard_attrs(path)["source"] == "test"
    assert read_settings(path) == st


def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(shards, "simulate_frames", boom)
    path = tmp_path / "out" / "shard-0000.h5"
    with pytest.raises(RuntimeError, match="simulated failure"):
        simulate_shard(path, 4, small_settings(), seed=0, dataset="train", index=0)
    assert not path.exists()
    assert list(path.parent.iterdir()) == []  # no temporary file either


def test_failure_does_not_clobber_existing_shard(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    good = make(path)
    monkeypatch.setattr(shards, "simulate_frames", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        simulate_shard(path, 4, small_settings(), seed=9, dataset="train", index=0)
    np.testing.assert_array_equal(read_shard(path).frames, good.frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def assert_one_line_naming(exc: InputError, path) -> None:
    msg = str(exc)
    assert str(path) in msg
    assert "\n" not in msg


@pytest.mark.parametrize("reader", [read_shard, read_settings, shard_length, shard_attrs])
def test_not_hdf5_raises_input_error(tmp_path, reader):
    path = tmp_path / "not-a-shard.h5"
    path.write_text("hello, I am text\n")
    with pytest.raises(InputError) as info:
        reader(path)
    assert_one_line_naming(info.value, path)


def test_hdf5_without_datasets_raises_input_error(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["frames"] = np.zeros((1, 4, 2, 2), dtype=np.float32)
    with pytest.raises(InputError) as info:
        read_shard(path)
    assert_one_line_naming(info.value, path)
    assert "emitters" in str(info.value)
    # all datasets but no settings attribute
    with h5py.File(path, "a") as h5:
        for name in ("emitters", "emitter_offsets", "drift_nm"):
            h5[name] = np.zeros(1)
    with pytest.raises(InputError) as info:
        read_settings(path)
    assert_one_line_naming(info.value, path)


def test_corrupt_frames_raise_one_line_naming_the_shard(tmp_path, corrupt_middle):
    path = tmp_path / "shard-0001.h5"
    make(path, n=300)
    hit = corrupt_middle(path)
    reader = shards.ShardReader(path)  # the metadata are intact: the damage shows on reading
    assert reader.n_frames == 300 and shard_length(path) == 300
    reads = {
        "read_shard": lambda: read_shard(path),
        "read_shard range": lambda: read_shard(path, hit[0], hit[0] + 1),
        "ShardReader.read_frames": lambda: reader.read_frames(np.array([0, hit[0]])),
    }
    for what, read in reads.items():
        with pytest.raises(InputError, match=r": unreadable \(.+\); delete it and rerun$") as info:
            read()
        assert_one_line_naming(info.value, path)
        assert str(info.value).startswith(f"{path}: "), what
    assert reader.read_frames(np.array([0])).shape == (1, 4, 8, 10)  # the other frames still read
    reader.close()


def test_missing_file_raises_input_error(tmp_path):
    path = tmp_path / "absent.h5"
    with pytest.raises(InputError) as info:
        read_shard(path)
    assert_one_line_naming(info.value, path)


# io helpers used by every writer (atomic outputs, TIFF)


def test_atomic_output_success_and_failure(tmp_path):
    path = tmp_path / "d" / "out.txt"
    with atomic_output(path) as tmp:
        assert tmp != path and tmp.parent == path.parent
        tmp.write_text("first")
        assert not path.exists()  # appears only on success
    assert path.read_text() == "first"
    # an exception inside leaves the existing file untouched and no temporary file
    with pytest.raises(ValueError), atomic_output(path) as tmp:
        tmp.write_text("second, half written")
        raise ValueError("boom")
    assert path.read_text() == "first"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]
    # and creates nothing when the file did not exist
    new = tmp_path / "d" / "new.txt"
    with pytest.raises(KeyError), atomic_output(new) as tmp:
        tmp.write_text("x")
        raise KeyError("boom")
    assert not new.exists()
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_write_tiff_quad_plane_is_not_rgb(tmp_path):
    data = np.arange(3 * 4 * 5 * 6, dtype=np.float32).reshape(3, 4, 5, 6)
    path = tmp_path / "movie.tif"
    write_tiff(path, data, axes="TCYX")
    back = tifffile.imread(path)
    assert back.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(back, data)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
        assert len(tif.pages) == 12  # one page per plane and frame, no colour samples
    # a (T, 3, H, W) stack is not taken for RGB either
    write_tiff(path, data[:, :3], axes="TCYX")
    assert tifffile.imread(path).shape == (3, 3, 5, 6)
