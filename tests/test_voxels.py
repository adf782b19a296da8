"""Voxel grid, encoding and decoding of Sect. 3.2 against hand-picked points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voxloc.voxels import CHANNELS, VoxelGrid, decode, encode, voxel_index

S = 192.0


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["frame", "x_nm", "y_nm", "z_nm", "photons"])


def test_z_edges_nominal_planes():
    grid = VoxelGrid(8, 8)
    assert grid.plane_z_nm == (0.0, 400.0, 800.0, 1200.0)
    assert grid.n_planes == 4
    np.testing.assert_array_equal(grid.z_edges_nm, [-200.0, 200.0, 600.0, 1000.0, 1400.0])
    assert grid.extent_nm == ((0.0, 8 * 192.0), (0.0, 8 * 192.0), (-200.0, 1400.0))


def test_z_edges_uneven_planes():
    grid = VoxelGrid(5, 7, px_size_nm=100.0, plane_z_nm=(0, 300, 900, 1000))
    # outer edges half a spacing beyond the ends: 0 - 300/2, 1000 + 100/2; inner: midpoints
    np.testing.assert_array_equal(grid.z_edges_nm, [-150.0, 150.0, 600.0, 950.0, 1050.0])
    assert grid.extent_nm == ((0.0, 700.0), (0.0, 500.0), (-150.0, 1050.0))


@pytest.mark.parametrize("planes", [(0.0,), (0.0, 400.0, 400.0), (800.0, 400.0)])
def test_grid_rejects_bad_planes(planes):
    with pytest.raises(ValueError):
        VoxelGrid(4, 4, plane_z_nm=planes)


def test_voxel_index_hand_picked_points():
    grid = VoxelGrid(6, 5)  # H = 6 rows, W = 5 columns, s = 192
    x = np.array([2.25 * S, 0.0, 4.999 * S, 1.5 * S, 1.5 * S, 1.5 * S, 5.0 * S, -0.1, 1.0 * S])
    y = np.array([3.75 * S, 0.0, 5.5 * S, 2.0 * S, 2.0 * S, 2.0 * S, 1.0 * S, 1.0 * S, 6.0 * S])
    z = np.array([-200.0, 0.0, 1399.9, 500.0, 1400.0, -200.1, 0.0, 0.0, 0.0])
    i, j, k, zeta, inside = voxel_index(x, y, z, grid)
    # x = 2.25 s -> column 2, ζx = 0.25; y = 3.75 s -> row 3, ζy = 0.75; z = -200 -> slab 0, ζz = 0
    assert (i[0], j[0], k[0]) == (3, 2, 0)
    np.testing.assert_allclose(zeta[0], [0.25, 0.75, 0.0], atol=1e-12)
    # the origin: voxel (0, 0), z = 0 is the centre of slab 0 [-200, 200): ζz = 0.5
    assert (i[1], j[1], k[1]) == (0, 0, 0)
    np.testing.assert_allclose(zeta[1], [0.0, 0.0, 0.5], atol=1e-12)
    # just inside the far corner: z = 1399.9 in slab 3 [1000, 1400), ζz = 399.9 / 400
    assert (i[2], j[2], k[2]) == (5, 4, 3)
    np.testing.assert_allclose(zeta[2], [0.999, 0.5, 399.9 / 400], atol=1e-9)
    # z = 500 in slab 1 [200, 600): ζz = 300 / 400
    assert (i[3], j[3], k[3]) == (2, 1, 1)
    np.testing.assert_allclose(zeta[3], [0.5, 0.0, 0.75], atol=1e-12)
    # outside: z = 1400 (upper edge excluded), z < -200, x = W s, x < 0, y = H s
    assert k[4] == 4
    np.testing.assert_array_equal(inside, [True, True, True, True, False, False, False, False, False])


def test_encode_hand_picked_targets():
    grid = VoxelGrid(4, 5)
    em = table(
        [
            (0, 2.25 * S, 1.5 * S, 500.0, 0.8),  # frame 0, voxel (i=1, j=2, k=1), ζ = (.25, .5, .75)
            (1, 0.1 * S, 3.9 * S, -100.0, 0.4),  # frame 1, voxel (3, 0, 0), ζ = (.1, .9, .25)
        ]
    )
    enc = encode(em, 2, grid)
    assert enc.targets.shape == (2, 4, 4, 4, 5)  # (T, P, 4, H, W)
    assert enc.targets.dtype == np.float32
    assert (enc.n_emitters, enc.n_collisions, enc.n_outside) == (2, 0, 0)
    t = enc.targets
    np.testing.assert_allclose(t[0, 1, :, 1, 2], [1.0, 0.25, 0.5, 0.75], atol=1e-6)
    np.testing.assert_allclose(t[1, 0, :, 3, 0], [1.0, 0.1, 0.9, 0.25], atol=1e-6)
    # nothing else is set
    assert t.sum() == pytest.approx(1.0 + 0.25 + 0.5 + 0.75 + 1.0 + 0.1 + 0.9 + 0.25, abs=1e-5)
    assert CHANNELS == ("c", "zeta_x", "zeta_y", "zeta_z")


def distinct_voxel_emitters(grid: VoxelGrid, n_frames: int, n_per_frame: int, rng) -> pd.DataFrame:
    """Emitters at random offsets in distinct random voxels (no collisions)."""
    P, H, W = grid.n_planes, grid.height, grid.width
    edges = grid.z_edges_nm
    rows = []
    for t in range(n_frames):
        flat = rng.choice(P * H * W, size=n_per_frame, replace=False)
        k, i, j = np.unravel_index(flat, (P, H, W))
        zeta = rng.uniform(0, 1, size=(n_per_frame, 3))
        x = (j + zeta[:, 0]) * grid.px_size_nm
        y = (i + zeta[:, 1]) * grid.px_size_nm
        z = edges[k] + zeta[:, 2] * (edges[k + 1] - edges[k])
        rows.append(
            pd.DataFrame(
                {"frame": t, "x_nm": x, "y_nm": y, "z_nm": z, "photons": rng.uniform(1600, 5400, n_per_frame)}
            )
        )
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("planes", [(0.0, 400.0, 800.0, 1200.0), (0.0, 300.0, 900.0, 1000.0)])
def test_encode_decode_round_trip(planes):
    grid = VoxelGrid(12, 16, px_size_nm=S, plane_z_nm=planes)
    rng = np.random.default_rng(0)
    em = distinct_voxel_emitters(grid, 5, 40, rng)
    em = em.astype({"x_nm": np.float32, "y_nm": np.float32, "z_nm": np.float32})
    enc = encode(em, 5, grid)
    assert (enc.n_emitters, enc.n_collisions, enc.n_outside) == (200, 0, 0)
    assert enc.targets[:, :, 0].sum() == 200
    out = decode(enc.targets, grid, 0.5)
    assert list(out.columns) == ["frame", "x_nm", "y_nm", "z_nm", "prob", "plane", "row", "col"]
    assert len(out) == 200
    key = ["frame", "x_nm"]
    a = em.sort_values(key).reset_index(drop=True)
    b = out.sort_values(key).reset_index(drop=True)
    np.testing.assert_array_equal(a["frame"], b["frame"])
    for c in ["x_nm", "y_nm", "z_nm"]:
        np.testing.assert_allclose(b[c].to_numpy(np.float64), a[c].to_numpy(np.float64), rtol=0, atol=1e-3)
    np.testing.assert_array_equal(b["prob"], 1.0)


def test_encode_collision_keeps_brightest():
    grid = VoxelGrid(4, 4)
    em = table(
        [
            (0, 1.2 * S, 1.3 * S, 100.0, 2500.0),
            (0, 1.7 * S, 1.9 * S, 150.0, 4500.0),  # same voxel (1, 1, 0), most photons: kept
            (0, 1.4 * S, 1.4 * S, 0.0, 1500.0),  # same voxel again, dimmest
            (1, 1.2 * S, 1.3 * S, 100.0, 2500.0),  # another frame: no collision
            (0, 1.5 * S, 1.5 * S, 300.0, 1000.0),  # slab 1: another voxel
        ]
    )
    enc = encode(em, 2, grid)
    assert enc.n_collisions == 2
    assert enc.n_outside == 0
    # (1.7 - 1, 1.9 - 1, (150 + 200) / 400)
    np.testing.assert_allclose(enc.targets[0, 0, :, 1, 1], [1.0, 0.7, 0.9, 0.875], atol=1e-6)
    np.testing.assert_allclose(enc.targets[1, 0, :, 1, 1], [1.0, 0.2, 0.3, 0.75], atol=1e-6)
    np.testing.assert_allclose(enc.targets[0, 1, :, 1, 1], [1.0, 0.5, 0.5, 0.25], atol=1e-6)
    # the order of the rows does not matter
    enc2 = encode(em.iloc[::-1].reset_index(drop=True), 2, grid)
    np.testing.assert_array_equal(enc2.targets, enc.targets)
    assert enc2.n_collisions == 2
    # the photons decide, not a leftover weight column that ranks them the other way
    stale = em.assign(weight=[0.9, 0.1, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(encode(stale, 2, grid).targets, enc.targets)


def test_encode_single_collision_count():
    grid = VoxelGrid(4, 4)
    em = table([(0, 0.5 * S, 0.5 * S, 0.0, 2000.0), (0, 0.6 * S, 0.6 * S, 10.0, 3000.0)])
    enc = encode(em, 1, grid)
    assert enc.n_collisions == 1
    np.testing.assert_allclose(enc.targets[0, 0, 1:, 0, 0], [0.6, 0.6, 210.0 / 400], atol=1e-6)


def test_encode_counts_outside():
    grid = VoxelGrid(4, 4)
    em = table(
        [
            (0, 0.5 * S, 0.5 * S, 0.0, 1.0),  # inside
            (0, 4.0 * S, 0.5 * S, 0.0, 1.0),  # x = W s
            (0, 0.5 * S, -1.0, 0.0, 1.0),  # y < 0
            (0, 0.5 * S, 0.5 * S, 1400.0, 1.0),  # z at the upper edge
            (0, 0.5 * S, 0.5 * S, -250.0, 1.0),  # z below
            (3, 0.5 * S, 0.5 * S, 0.0, 1.0),  # frame >= n_frames
            (-1, 0.5 * S, 0.5 * S, 0.0, 1.0),  # frame < 0
        ]
    )
    enc = encode(em, 2, grid)
    assert (enc.n_emitters, enc.n_outside, enc.n_collisions) == (7, 6, 0)
    assert enc.targets[:, :, 0].sum() == 1.0


def test_encode_without_photons_column():
    grid = VoxelGrid(4, 4)
    em = pd.DataFrame({"frame": [0], "x_nm": [S], "y_nm": [S], "z_nm": [0.0]})
    enc = encode(em, 1, grid)
    assert enc.targets[0, 0, 0, 1, 1] == 1.0


def test_decode_threshold():
    grid = VoxelGrid(3, 3)
    out = np.zeros((1, 4, 4, 3, 3), dtype=np.float32)
    for (k, i, j), c in zip([(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 0, 2)], [0.2, 0.5, 0.7, 0.9], strict=True):
        out[0, k, :, i, j] = [c, 0.5, 0.5, 0.5]
    df = decode(out, grid, tau=0.5)
    # strictly greater than τ: 0.5 is not taken
    np.testing.assert_allclose(np.sort(df["prob"].to_numpy()), [0.7, 0.9], rtol=1e-6)
    assert sorted(zip(df["plane"], df["row"], df["col"], strict=True)) == [(2, 2, 2), (3, 0, 2)]
    assert len(decode(out, grid, tau=0.1)) == 4
    assert len(decode(out, grid, tau=0.95)) == 0


def test_decode_16_channel_layout():
    """Channel 4k + q of a (T, 16, H, W) output is channel q of plane k."""
    grid = VoxelGrid(3, 4)
    flat = np.zeros((2, 16, 3, 4), dtype=np.float32)
    # frame 1, plane k = 2, pixel (row 1, col 3): channels 8, 9, 10, 11
    flat[1, 8, 1, 3] = 0.95
    flat[1, 9, 1, 3] = 0.25
    flat[1, 10, 1, 3] = 0.5
    flat[1, 11, 1, 3] = 0.75
    df = decode(flat, grid, 0.5, frame_offset=10)
    assert len(df) == 1
    row = df.iloc[0]
    assert (row["frame"], row["plane"], row["row"], row["col"]) == (11, 2, 1, 3)
    assert row["x_nm"] == pytest.approx((3 + 0.25) * S, abs=1e-3)
    assert row["y_nm"] == pytest.approx((1 + 0.5) * S, abs=1e-3)
    # slab 2 = [600, 1000): 600 + 0.75 * 400
    assert row["z_nm"] == pytest.approx(900.0, abs=1e-3)
    assert row["prob"] == pytest.approx(0.95)
    # the same through the 5-D layout
    five = flat.reshape(2, 4, 4, 3, 4)
    pd.testing.assert_frame_equal(decode(five, grid, 0.5, frame_offset=10), df)
    # and encode's output flattened the same way decodes identically
    em = table([(0, 0.5 * S, 2.5 * S, 1100.0, 1.0)])
    targets = encode(em, 1, grid).targets
    assert targets.reshape(1, 16, 3, 4)[0, 12, 2, 0] == 1.0  # plane 3 -> channel 12
    pd.testing.assert_frame_equal(decode(targets.reshape(1, 16, 3, 4), grid), decode(targets, grid))
