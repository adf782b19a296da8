"""Microscope.patches (the per-molecule fitter's model) against Microscope.render frames, and
its analytic derivatives against central finite differences (the compiled kernels of
voxloc.physics._patch_kernels)."""

from __future__ import annotations

import numpy as np
import pytest

from voxloc.physics.microscope import Microscope

PLANES = (0.0, 400.0, 800.0, 1200.0)
PX = 192.0
Z0, DZ, NZ = -300.0, 20.0, 91  # spline nodes -300 .. 1500 nm
HALF = 8  # the spline grid of the calibration's default (L = 19 nodes, windows of ±8 px)
SMALL = 4  # a small grid (L = 11 nodes, windows of ±4 px) that windows can leave
FRAME = 48


@pytest.fixture(scope="module")
def microscopes(gaussian_spline) -> dict[str, Microscope]:
    spline, small = gaussian_spline(HALF), gaussian_spline(SMALL)
    return {
        "gauss_point": Microscope(),
        "gauss_integrated": Microscope(integrate_pixels=True),
        "spline": Microscope(psf=spline, plane_z_nm=PLANES, px_size_nm=PX),
        "spline_small": Microscope(psf=small, plane_z_nm=PLANES, px_size_nm=PX),
    }


def molecules(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, P, 2) px where each plane sees a molecule (planes apart by < 1 px, as registered
    cameras are) and depths (m,) nm within the spline's range."""
    pos = rng.uniform(20, 28, (m, 1, 2)) + rng.uniform(-0.8, 0.8, (m, len(PLANES), 2))
    return pos, rng.uniform(-250, 1450, m)


def natural_origin(pos: np.ndarray, n: int) -> np.ndarray:
    """The window origin of cut_windows: its central pixel holds the molecule."""
    return (np.ceil(pos - 0.5) - n // 2).astype(np.int64)


def rendered(mic: Microscope, pos: np.ndarray, z: np.ndarray) -> np.ndarray:
    """One frame per molecule, one photon each: (m, P, H, W), float64."""
    m = len(z)
    return mic.render((pos * PX)[:, None], z[:, None], np.ones((m, 1)), (FRAME, FRAME), dtype=np.float64)


def cut(frames: np.ndarray, origin: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(origin.shape[:2] + (n, n))
    for m in range(origin.shape[0]):
        for k in range(origin.shape[1]):
            c, r = origin[m, k]
            out[m, k] = frames[m, k, r : r + n, c : c + n]
    return out


@pytest.mark.parametrize(
    ("kind", "n"),
    [(k, n) for k in ("gauss_point", "gauss_integrated", "spline") for n in (5, 7, 9)]
    + [("spline_small", 5), ("spline_small", 7)],
)
def test_patches_equal_rendered_windows(microscopes, kind, n):
    """For the natural origin and origins shifted by ±1 px in column, row or both, the
    patches are the rendered frames' pixels (float64 exact; the spline's render is exact in
    float64 too). A spline window shifted by 1 px is within the spline's rendered window
    (±half_px about the pixel holding the molecule) when its side is <= 2 half_px - 1; the
    small grid's 9 px windows are tested in test_spline_patches_beyond_grid_are_zero."""
    mic = microscopes[kind]
    rng = np.random.default_rng(10 + n)
    pos, z = molecules(rng, 12)
    frames = rendered(mic, pos, z)
    assert frames.max() > 0.01  # light per photon in the window: a real comparison
    for shift in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1)]:
        origin = natural_origin(pos, n) + np.array(shift)
        values, deriv = mic.patches(pos[..., 0], pos[..., 1], z, origin, n)
        assert deriv is None
        assert values.shape == (len(z), len(PLANES), n, n)
        ref = cut(frames, origin, n)
        np.testing.assert_allclose(values, ref, rtol=0, atol=1e-12 * ref.max(), err_msg=f"shift {shift}")


def test_spline_patches_beyond_grid_are_zero(microscopes):
    """A spline window far larger than the grid (L = 2 R + 1 nodes): it equals the rendered
    frame within the spline's render window (±half_px px about the pixel holding the
    molecule) and is exactly 0 where the B-spline has no support (pixel centres >= R + 3 px
    from the molecule: R + 1 is the last (mirrored) coefficient, a cubic B-spline reaches 2
    nodes). Positions up to 5 px from the window's centre put the grid partly outside."""
    mic = microscopes["spline_small"]
    psf = mic.psf
    r = psf.grid_px // 2
    h = psf.half_px
    n = 25
    rng = np.random.default_rng(3)
    pos, z = molecules(rng, 10)
    frames = rendered(mic, pos, z)
    for shift in [(0, 0), (5, 0), (-5, 3), (4, -5)]:
        origin = natural_origin(pos, n) + np.array(shift)
        values, _ = mic.patches(pos[..., 0], pos[..., 1], z, origin, n)
        ref = cut(frames, origin, n)
        a = np.arange(n)
        cols = origin[..., 0, None] + a  # (m, P, n)
        rows = origin[..., 1, None] + a
        # offsets from the pixel holding the molecule, and pixel centres' distance (px)
        jx = cols - np.ceil(pos[..., 0, None] - 0.5)
        jy = rows - np.ceil(pos[..., 1, None] - 0.5)
        ux = cols + 0.5 - pos[..., 0, None]
        uy = rows + 0.5 - pos[..., 1, None]
        inside = (np.abs(jy) <= h)[..., :, None] & (np.abs(jx) <= h)[..., None, :]
        beyond = (np.abs(uy) >= r + 3)[..., :, None] | (np.abs(ux) >= r + 3)[..., None, :]
        assert inside.any() and beyond.any() and (~inside).any()
        np.testing.assert_allclose(values[inside], ref[inside], rtol=0, atol=1e-12)
        assert np.all(values[beyond] == 0.0)
        # the render has no light outside its window: the frames' pixels there are 0
        assert np.all(ref[~inside] == 0.0)


def test_spline_patches_equal_render_on_whole_window(microscopes):
    """Microscope.patches says it is 'the same function as render': a window reaching one
    pixel beyond the spline's half_px should then equal the rendered frame everywhere."""
    mic = microscopes["spline_small"]
    n = 2 * mic.psf.half_px + 1
    rng = np.random.default_rng(4)
    pos, z = molecules(rng, 10)
    frames = rendered(mic, pos, z)
    origin = natural_origin(pos, n) + 1
    values, _ = mic.patches(pos[..., 0], pos[..., 1], z, origin, n)
    ref = cut(frames, origin, n)
    np.testing.assert_allclose(values, ref, rtol=0, atol=1e-6 * ref.max())


@pytest.mark.parametrize("kind", ["gauss_point", "gauss_integrated", "spline"])
def test_patch_derivatives_match_finite_differences(microscopes, kind):
    """d/dx_nm, d/dy_nm (of plane k's position) and d/dz_nm against central differences of
    the values, on fixed windows (shifted from the natural origin), within 1e-6 of each
    axis's largest derivative."""
    mic = microscopes[kind]
    rng = np.random.default_rng(5)
    m, n = 16, 9
    pos, z = molecules(rng, m)
    origin = natural_origin(pos, n) + rng.integers(-1, 2, (m, len(PLANES), 2))
    x, y = pos[..., 0], pos[..., 1]
    values, deriv = mic.patches(x, y, z, origin, n, derivatives=True)
    assert deriv.shape == (m, len(PLANES), 3, n, n)
    np.testing.assert_allclose(values, mic.patches(x, y, z, origin, n)[0], rtol=1e-12, atol=1e-15)
    h = 0.01  # nm
    hp = h / PX
    fd = [
        mic.patches(x + hp, y, z, origin, n)[0] - mic.patches(x - hp, y, z, origin, n)[0],
        mic.patches(x, y + hp, z, origin, n)[0] - mic.patches(x, y - hp, z, origin, n)[0],
        mic.patches(x, y, z + h, origin, n)[0] - mic.patches(x, y, z - h, origin, n)[0],
    ]
    for a in range(3):
        num = fd[a] / (2 * h)
        scale = np.abs(deriv[:, :, a]).max(axis=(-1, -2), keepdims=True)  # per molecule and plane
        assert np.all(scale > 0)
        err = np.abs(deriv[:, :, a] - num) / scale
        assert err.max() < 1e-6, (a, err.max())
