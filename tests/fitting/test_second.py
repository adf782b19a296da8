"""A molecule the network missed beside a detected one (voxloc.fitting.second): found in the
single fit's residual and kept by the likelihood-ratio test; a lone molecule gains nothing."""

from __future__ import annotations

import numpy as np
from test_refine import PX, network_table, refiner, render_frames

from voxloc.locs import FIT_FLAGS, LOC_SCHEMA
from voxloc.physics.microscope import Microscope

FOUND, JOINT = FIT_FLAGS["found"], FIT_FLAGS["joint"]


def scene(n_frames: int, separation_nm: float, rng: np.random.Generator):
    """Per frame, molecule A (detected: truth + N(0, 30 nm), z + N(0, 40)) and, if
    ``separation_nm``, molecule B that far from it in a random direction, not detected."""
    mic = Microscope()
    cx, cy = rng.uniform(20, 28, (2, n_frames)) * PX
    ang = rng.uniform(0, 2 * np.pi, n_frames)
    bx, by = cx + separation_nm * np.cos(ang), cy + separation_nm * np.sin(ang)
    za, zb = rng.uniform(200, 1000, (2, n_frames))
    na, nb = rng.uniform(3000, 5000, (2, n_frames))
    frames = np.arange(n_frames)
    if separation_nm:
        f_true = np.concatenate([frames, frames])
        x, y, z, n = (np.concatenate(v) for v in ((cx, bx), (cy, by), (za, zb), (na, nb)))
    else:
        f_true, x, y, z, n = frames, cx, cy, za, na
    cams = render_frames(mic, f_true, x, y, z, n, n_frames, rng)
    table = network_table(frames, cx + rng.normal(0, 30, n_frames), cy + rng.normal(0, 30, n_frames),
                          za + rng.normal(0, 40, n_frames))  # fmt: skip
    return mic, cams, table, np.stack([bx, by, zb], axis=1)


def test_a_missed_neighbour_is_found_with_its_own_row():
    rng = np.random.default_rng(21)
    mic, cams, table, b_true = scene(40, 500.0, rng)
    ref = refiner(mic, "joint")
    out = ref(table, cams, 0)
    assert list(out.columns) == LOC_SCHEMA.names
    found = out[(out["fit_flags"] & FOUND) > 0]
    assert len(found) >= 34, len(found)  # 40 missed molecules 2.6 px from a detected one
    assert found[["x_net_nm", "y_net_nm", "z_net_nm"]].isna().all().all()  # not the network's
    assert (found["fit_flags"] & JOINT).all()
    # each found row follows its parent, in the parent's frame
    parent = out.index[(out["fit_flags"] & FOUND) > 0] - 1
    assert ((out.loc[parent, "fit_flags"] & FOUND) == 0).all()
    np.testing.assert_array_equal(out.loc[parent, "frame"].to_numpy(), found["frame"].to_numpy())
    err = found[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64) - b_true[found["frame"].to_numpy()]
    sigma = found[["sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]].to_numpy(np.float64)
    assert np.all(np.sqrt(np.mean(err**2, axis=0)) < 2.0 * np.sqrt(np.mean(sigma**2, axis=0)))
    assert abs(np.median(found["photons"]) / 4000 - 1) < 0.15
    assert f"{len(found)} molecules found beside another" in ref.summary()
    # off: the network's rows only
    alone = refiner(mic, "joint", second=False)(table, cams, 0)
    assert len(alone) == 40 and not (alone["fit_flags"] & FOUND).any()


def test_a_lone_molecule_gains_no_row():
    rng = np.random.default_rng(22)
    mic, cams, table, _ = scene(60, 0.0, rng)
    out = refiner(mic, "joint")(table, cams, 0)
    assert ((out["fit_flags"] & FOUND) > 0).sum() <= 2  # p = 1e-6 per window, but a score gate
    assert len(out) <= 62
