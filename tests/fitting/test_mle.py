"""The per-molecule maximum-likelihood fit (voxloc.fitting.mle, voxloc.fitting.windows) on
simulated isolated molecules: efficiency against the CRLB, calibrated σ, photometry, the
EM-CCD likelihood, and bad input (edges, saturated / NaN pixels, far starts, no molecule)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from voxloc.fitting.mle import FitOptions, FitResult, fit_windows, z_bounds_nm
from voxloc.fitting.windows import CameraMaps, cut_windows, saturation_photons
from voxloc.locs import FIT_FLAGS
from voxloc.physics.cameras import affine_matrix
from voxloc.physics.crlb import crlb
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel, PixelNoise, add_noise, to_photons

PX = 192.0
PLANES = (0.0, 400.0, 800.0, 1200.0)
FRAME = 48  # px: one molecule per frame
N_MOL = 300
Z_RANGE = (-400.0, 1600.0)  # the network's z range: the fit's z bounds
# cameras 2-4 rotated, scaled and shifted against camera 1
REGISTRATIONS = [np.eye(3)] + [
    affine_matrix(
        height=FRAME, width=FRAME, rotation_deg=1.5 * k, scale=1 + 0.01 * k, shift_px=(0.7 * k, -0.4 * k)
    )
    for k in range(1, 4)
]
MAPS = CameraMaps.from_registrations(REGISTRATIONS)
#: an EM-CCD: 50 e⁻ rms read noise at gain 100 (0.5 photons rms), 25 e⁻/ADU, offset 100 ADU
EMCCD = NoiseModel(
    kind="physical", background=10.0, read_noise_var=2500.0, em_gain=100.0, sensitivity_e_per_adu=25.0,
    baseline_adu=100.0,
)  # fmt: skip
Z0, DZ, NZ = -300.0, 20.0, 91  # spline nodes -300 .. 1500 nm


@dataclass
class Batch:
    """Frames in photons per camera [(B, H, W)], the truth (B,) and noisy starts (B,)."""

    mic: Microscope
    cams: list[np.ndarray]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    photons: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    z0: np.ndarray

    @property
    def truth(self) -> np.ndarray:
        return np.stack([self.x, self.y, self.z], axis=1)

    def fit(self, noise: PixelNoise, idx=slice(None), **kwargs) -> FitResult:
        x0, y0, z0 = self.x0[idx], self.y0[idx], self.z0[idx]
        frames = np.arange(len(self.x))[idx]
        win = cut_windows(self.cams, frames, MAPS.positions_px(x0, y0, PX), kwargs.get("options", FitOptions()).window_px,
                          saturation=kwargs.pop("saturation", None))  # fmt: skip
        return fit_windows(
            self.mic, noise, MAPS, win, x0, y0, z0, z_bounds=z_bounds_nm(self.mic, Z_RANGE), **kwargs
        )


def simulate(mic: Microscope, n: int, seed: int) -> Batch:
    """Isolated molecules, one per frame: x, y U[16, 32] px, z U[0, 1200] nm, photons
    U[1600, 5400] (summed over the planes); rendered in every camera through its
    registration, noise of ``mic``, converted to photons; starts = truth + N(0, 40 nm)
    laterally, N(0, 50 nm) axially (the network's error)."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(16, 32, (2, n)) * PX
    z = rng.uniform(0, 1200, n)
    photons = rng.uniform(1600, 5400, n)
    pos = MAPS.positions_px(x, y, PX)  # (n, P, 2)
    signal = mic.render((pos * PX)[:, None], z[:, None], photons[:, None], (FRAME, FRAME), dtype=np.float64)
    frames = to_photons(add_noise(signal, mic.noise, rng), mic.noise)
    cams = [np.ascontiguousarray(frames[:, k]) for k in range(len(PLANES))]
    x0, y0 = x + rng.normal(0, 40, n), y + rng.normal(0, 40, n)
    z0 = z + rng.normal(0, 50, n)
    return Batch(mic, cams, x, y, z, photons, x0, y0, z0)


@pytest.fixture(scope="module")
def paper() -> Batch:
    """The paper's physics: Table 2 Gaussian, Poisson(10) + N(0, 9) noise added to the signal."""
    return simulate(Microscope(), N_MOL, seed=1)


@pytest.fixture(scope="module")
def emccd(gaussian_spline) -> Batch:
    """The spline PSF (of the Table 2 Gaussian) behind an EM-CCD (excess noise factor 2)."""
    spline = gaussian_spline()
    return simulate(Microscope(psf=spline, plane_z_nm=PLANES, px_size_nm=PX, noise=EMCCD), N_MOL, seed=2)


def check_efficient(batch: Batch, res: FitResult, *, ratio: float = 1.25) -> None:
    """RMSE per axis <= ratio x sqrt(mean CRLB) at the truth; |error| < σ for 60-76 % per
    axis (68.3 % ± 3 binomial standard deviations of 300)."""
    err = res.theta[:, :3] - batch.truth
    rmse = np.sqrt(np.mean(err**2, axis=0))
    bound = np.sqrt(crlb(batch.mic, batch.x, batch.y, batch.z, batch.photons).mean(axis=0))
    assert np.all(rmse <= ratio * bound), (rmse, bound, rmse / bound)
    # the fit does improve on the starts by far (40 / 50 nm)
    start = np.sqrt(np.mean((np.stack([batch.x0, batch.y0, batch.z0], axis=1) - batch.truth) ** 2, axis=0))
    assert np.all(rmse < 0.5 * start), (rmse, start)
    coverage = np.mean(np.abs(err) < res.sigma_nm, axis=0)
    assert np.all((coverage >= 0.60) & (coverage <= 0.76)), coverage


def test_paper_physics_reaches_the_crlb(paper):
    """Gaussian likelihood of constant variance λ + σ² = 19 (the paper's noise)."""
    noise = PixelNoise.from_model(paper.mic.noise)
    assert noise.kind == "constant" and noise.constant_var == 19.0
    res = paper.fit(noise)
    assert res.converged.all() and np.all(res.flags == 0)
    assert np.all(res.n_iter <= FitOptions().max_iter)
    check_efficient(paper, res)
    assert abs(np.median(res.theta[:, 3] / paper.photons) - 1) < 0.03
    bg = np.median(res.theta[:, 4:], axis=0)  # per plane
    assert np.all(np.abs(bg / 10.0 - 1) < 0.03), bg
    assert 0.9 <= np.median(res.chi2_dof) <= 1.1
    assert np.all(np.isfinite(res.sigma_nm)) and np.all(res.sigma_nm > 0)


def test_fit_of_a_detection_does_not_depend_on_its_batch(paper):
    """The batched Levenberg-Marquardt iterates each detection on its own: a subset fitted
    alone gives the same estimates as within the whole batch."""
    noise = PixelNoise.from_model(paper.mic.noise)
    idx = np.arange(7, 300, 37)
    whole = paper.fit(noise)
    part = paper.fit(noise, idx)
    np.testing.assert_allclose(part.theta, whole.theta[idx], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(part.sigma_nm, whole.sigma_nm[idx], rtol=1e-9)
    np.testing.assert_array_equal(part.n_iter, whole.n_iter[idx])


def test_emccd_excess_noise_likelihood(emccd):
    """The spline PSF behind an EM-CCD: with the excess-noise likelihood (Poisson of half the
    counts) the fit is efficient and σ calibrated; the sCMOS likelihood (no excess factor)
    fits about as well but has σ too small by √2 (coverage ~52 %) and χ² ~2."""
    right_noise = PixelNoise.from_model(EMCCD)
    assert right_noise.kind == "poisson" and right_noise.excess == 2.0
    assert right_noise.read_var_photons == pytest.approx(0.25)
    right = emccd.fit(right_noise)
    assert right.converged.all() and np.all(right.flags == 0)
    check_efficient(emccd, right)
    assert abs(np.median(right.theta[:, 3] / emccd.photons) - 1) < 0.03
    assert np.all(np.abs(np.median(right.theta[:, 4:], axis=0) / 10.0 - 1) < 0.03)
    assert 0.9 <= np.median(right.chi2_dof) <= 1.1
    # the camera's own description of the same EM-CCD is the same likelihood
    same = emccd.fit(PixelNoise.from_camera("emccd", 0.5))
    np.testing.assert_allclose(same.theta, right.theta, rtol=1e-9, atol=1e-9)

    wrong = emccd.fit(PixelNoise.from_camera("scmos", 0.5))
    err = wrong.theta[:, :3] - emccd.truth
    coverage = np.mean(np.abs(err) < wrong.sigma_nm, axis=0)
    assert np.all(coverage < 0.62), coverage
    assert np.mean(coverage) < 0.58, coverage  # pooled over 900 errors: 52 % expected
    ratio = np.median(wrong.sigma_nm / right.sigma_nm, axis=0)
    np.testing.assert_allclose(ratio, 1 / np.sqrt(2), rtol=0.05)
    assert 1.8 <= np.median(wrong.chi2_dof) <= 2.2


def test_skip_keeps_the_start_position(paper):
    """``skip`` detections keep the start exactly (no iteration), with photons and
    backgrounds fitted there and σ from the information there; a start at the truth gives
    the truth's photons and background."""
    noise = PixelNoise.from_model(paper.mic.noise)
    idx = np.arange(60)
    skip = np.zeros(len(idx), bool)
    skip[::2] = True
    fitted = paper.fit(noise, idx)
    res = paper.fit(noise, idx, skip=skip)
    np.testing.assert_array_equal(res.theta[skip, 0], paper.x0[idx][skip])
    np.testing.assert_array_equal(res.theta[skip, 1], paper.y0[idx][skip])
    np.testing.assert_array_equal(res.theta[skip, 2], paper.z0[idx][skip])
    assert np.all(res.n_iter[skip] == 0) and not res.converged[skip].any()
    assert np.all(res.flags[skip] == 0)
    assert np.all(np.isfinite(res.theta[skip])) and np.all(np.isfinite(res.sigma_nm[skip]))
    assert np.all(res.sigma_nm[skip] > 0)
    # the others are fitted as without skip
    np.testing.assert_allclose(res.theta[~skip], fitted.theta[~skip], rtol=1e-9, atol=1e-9)
    # photons and backgrounds at the true position: unbiased
    at_truth = Batch(
        paper.mic, paper.cams, paper.x, paper.y, paper.z, paper.photons, paper.x, paper.y, paper.z
    )
    exact = at_truth.fit(noise, skip=np.ones(N_MOL, bool))
    np.testing.assert_array_equal(exact.theta[:, :3], paper.truth)
    assert abs(np.median(exact.theta[:, 3] / paper.photons) - 1) < 0.03
    assert np.all(np.abs(np.median(exact.theta[:, 4:], axis=0) / 10.0 - 1) < 0.03)
    # σ there is the information at (about) the fitted estimate: the full fit's σ
    full = paper.fit(noise)
    ratio = exact.sigma_nm / full.sigma_nm
    assert np.all(np.abs(np.median(ratio, axis=0) - 1) < 0.03) and np.all(np.abs(np.log(ratio)) < 0.3)


def test_bad_input_is_flagged_not_fatal():
    """One frame each: (0) a molecule 1.6 px from camera 1's left edge, (1) a saturated pixel
    and a NaN pixel in its windows, (2) a start 3 px (> max_shift_px) from the molecule, (3)
    a window of background only, (4) a clean molecule."""
    mic = Microscope()
    noise = PixelNoise.from_model(mic.noise)
    rng = np.random.default_rng(7)
    x = np.array([1.6, 24.0, 24.0, 24.0, 24.2]) * PX
    y = np.array([24.0, 24.3, 23.8, 24.0, 24.0]) * PX
    z = np.array([600.0, 500.0, 700.0, 600.0, 650.0])
    photons = np.array([4000.0, 4000.0, 4000.0, 0.0, 4000.0])
    pos = MAPS.positions_px(x, y, PX)
    signal = mic.render((pos * PX)[:, None], z[:, None], photons[:, None], (FRAME, FRAME), dtype=np.float64)
    frames = add_noise(signal, mic.noise, rng).astype(np.float64)
    saturation = 1e4
    held = np.ceil(pos[1] - 0.5).astype(int)  # (P, 2): the pixel holding molecule 1 per camera
    frames[1, 0, held[0, 1], held[0, 0]] = 5e4  # its peak pixel in camera 1: saturated
    frames[1, 1, held[1, 1] + 1, held[1, 0]] = np.nan  # next to its peak in camera 2
    cams = [frames[:, k] for k in range(4)]
    x0, y0, z0 = x.copy(), y.copy(), z.copy()
    x0[2] += 3 * PX
    win = cut_windows(cams, np.arange(5), MAPS.positions_px(x0, y0, PX), 9, saturation=saturation)
    assert win.edge.tolist() == [True, False, False, False, False]
    assert win.bad.tolist() == [False, True, False, False, False]
    missing = (~win.mask).sum(axis=(2, 3))  # (5, P)
    assert missing[1].tolist() == [1, 1, 0, 0]  # exactly the saturated and the NaN pixel
    assert missing[0, 0] == 9 * 2 and missing[2:].sum() == 0  # camera 1's window: 2 columns off the frame
    assert np.all(win.data[~win.mask] == 0)
    res = fit_windows(mic, noise, MAPS, win, x0, y0, z0, z_bounds=Z_RANGE)
    assert np.all(np.isfinite(res.theta)) and np.all(np.isfinite(res.sigma_nm))
    edge, sat, div = FIT_FLAGS["edge"], FIT_FLAGS["saturated"], FIT_FLAGS["diverged"]
    assert res.flags.tolist() == [edge, sat, div, res.flags[3], 0]
    # the edge and saturated molecules are fitted, close to the truth
    truth = np.stack([x, y, z], axis=1)
    for m in (0, 1, 4):
        assert res.converged[m]
        assert np.all(np.abs(res.theta[m, :3] - truth[m]) < 4 * res.sigma_nm[m]), (
            m,
            res.theta[m, :3] - truth[m],
        )
        assert abs(res.theta[m, 3] / photons[m] - 1) < 0.1
    # the far start: the fit would leave its bounds, so it keeps the start
    np.testing.assert_array_equal(res.theta[2, :3], [x0[2], y0[2], z0[2]])
    assert not res.converged[2]
    # background only: no exception, a finite position within bounds and almost no photons
    assert np.all(np.abs(res.theta[3, :2] - [x0[3], y0[3]]) <= FitOptions().max_shift_px * PX)
    assert res.theta[3, 3] < 300
    if res.flags[3] & div:
        np.testing.assert_array_equal(res.theta[3, :3], [x0[3], y0[3], z0[3]])


@pytest.mark.parametrize("max_iter", [1, 3])
def test_iteration_cap(paper, max_iter):
    """n_iter <= max_iter; a detection that had not converged by then is flagged ``max_iter``
    (its last estimate kept, not converged), the others are not."""
    noise = PixelNoise.from_model(paper.mic.noise)
    res = paper.fit(noise, np.arange(100), options=FitOptions(max_iter=max_iter))
    assert np.all(res.n_iter <= max_iter) and np.all(res.n_iter >= 1)
    capped = (res.flags & FIT_FLAGS["max_iter"]) != 0
    assert capped.sum() >= (90 if max_iter == 1 else 10)  # the full fit takes 3-5 iterations
    ok = (res.flags & FIT_FLAGS["diverged"]) == 0
    np.testing.assert_array_equal(capped[ok], ~res.converged[ok])
    assert np.all(res.n_iter[capped] == max_iter)
    assert np.all(np.isfinite(res.theta)) and np.all(np.isfinite(res.sigma_nm))


def test_options_and_saturation_value():
    with pytest.raises(ValueError, match="odd"):
        FitOptions(window_px=8)
    with pytest.raises(ValueError, match="odd"):
        FitOptions(window_px=1)
    with pytest.raises(ValueError, match="max_iter"):
        FitOptions(max_iter=0)
    assert saturation_photons(np.uint16, 100.0, 4.0) == (65535 - 100) / 4
    assert saturation_photons(np.dtype("int16"), 0.0, 1.0) == 32767.0
    assert saturation_photons(np.float32, 100.0, 4.0) is None


def test_empty_batch():
    """A batch without detections (e.g. blank frames) fits nothing and raises nothing."""
    mic = Microscope()
    win = cut_windows([np.zeros((2, FRAME, FRAME))] * 4, np.zeros(0, int), np.zeros((0, 4, 2)), 9)
    res = fit_windows(mic, PixelNoise.from_model(mic.noise), MAPS, win, np.zeros(0), np.zeros(0), np.zeros(0),
                      z_bounds=Z_RANGE)  # fmt: skip
    assert res.theta.shape == (0, 8) and res.sigma_nm.shape == (0, 3) and len(res.flags) == 0


def test_a_start_that_is_not_a_number_is_flagged_not_raised():
    """One NaN start among good ones: the batch is fitted, the NaN row comes back as it came,
    flagged diverged, with no sigma."""
    mic = Microscope()
    maps = CameraMaps.from_registrations([np.eye(3)] * 4)
    rng = np.random.default_rng(3)
    x, y, z = np.array([4608.0, np.nan]), np.array([4608.0, 4608.0]), np.array([600.0, 600.0])
    signal = mic.render(np.broadcast_to(np.array([4608.0, 4608.0]), (1, 1, 4, 2)), np.array([[600.0]]),
                        np.array([[3000.0]]), (48, 48), dtype=np.float64)  # fmt: skip
    frames = add_noise(signal, mic.noise, rng)
    cams = [np.concatenate([frames[:, k]] * 2) for k in range(4)]
    win = cut_windows(cams, np.arange(2), maps.positions_px(x, y, 192.0), 9)
    res = fit_windows(mic, PixelNoise.from_model(mic.noise), maps, win, x, y, z, z_bounds=(-400, 1600))
    assert (
        np.isnan(res.theta[1, 0]) and res.flags[1] & FIT_FLAGS["diverged"] and np.isnan(res.sigma_nm[1]).all()
    )
    assert abs(res.theta[0, 0] - 4608.0) < 30 and np.isfinite(res.sigma_nm[0]).all()
