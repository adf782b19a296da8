"""PSF of Eqs. 4-7 against values computed by hand from Table 2 (Aritake et al. 2020)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxloc.physics.psf import (
    TABLE2,
    PSFParams,
    defocus_width_nm,
    peak_amplitude,
    photons_per_plane,
    psf_value,
    render_planes,
)

# Table 2, written out again so that a change of the defaults fails here
A_PRIME = 5.00e7
R0 = 133.0
D = 302.0
A = 7.37e-4
B = 6.27e-3
PLANES = np.array([0.0, 400.0, 800.0, 1200.0])
P = len(PLANES)


def photons_of_weight(w: float, s: float) -> float:
    """Detected photons summed over the P planes of a molecule of weight w (Eq. 6 with
    Table 2's a'): each plane gets w a' / s^2 under equal transmission."""
    return P * w * A_PRIME / (s * s)


def width(x: float) -> float:
    """Eq. 5 by hand."""
    u = x / D
    return R0 * math.sqrt(1 + u**2 + A * u**3 + B * u**4)


def gauss_2d(x, y, mx, my, z_plane, z_mol, n, s, t=1.0 / P):
    """Eq. 4, b = 0, by hand, for n photons of which the plane gets the share t: the peak
    n t s^2 / (2 pi r^2) (Eq. 6 with w a' = n t s^2)."""
    r = width(z_plane - z_mol)
    return n * t * s * s / (2 * math.pi * r * r) * math.exp(-((x - mx) ** 2 + (y - my) ** 2) / (2 * r * r))


def render_one(
    x, y, z, n, *, params=TABLE2, shape=(9, 9), s=100.0, integrate=False, drift=None, transmission=None
):
    """Render one molecule of n photons (seen at (x, y) + drift_k by plane k) -> (P, H, W)."""
    xy = np.tile(np.array([x, y], dtype=float), (len(PLANES), 1))
    if drift is not None:
        xy = xy + np.asarray(drift, dtype=float)
    return render_planes(
        xy[None],
        np.array([z]),
        np.array([n]),
        params,
        PLANES,
        shape,
        s,
        transmission=transmission,
        integrate=integrate,
    )


def test_table2_defaults():
    assert TABLE2 == PSFParams(a_prime=5.00e7, b=0.0, r0_nm=133.0, D_nm=302.0, A=7.37e-4, B=6.27e-3)
    assert PSFParams.from_dict(TABLE2.to_dict()) == TABLE2
    with pytest.raises(ValueError, match="unknown"):
        PSFParams.from_dict({"r0": 1.0})


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.0, R0),  # in focus: r0
        (D, R0 * math.sqrt(2 + A + B)),  # u = 1: 1 + 1 + A + B
        (-D, R0 * math.sqrt(2 - A + B)),  # u = -1: the cubic term changes sign
        (2 * D, R0 * math.sqrt(1 + 4 + 8 * A + 16 * B)),  # u = 2
        (-2 * D, R0 * math.sqrt(1 + 4 - 8 * A + 16 * B)),  # u = -2
    ],
)
def test_defocus_width(x, expected):
    got = defocus_width_nm(x, r0_nm=R0, D_nm=D, A=A, B=B)
    assert got == pytest.approx(expected, rel=1e-12)


def test_defocus_width_numbers():
    # the same, as decimal numbers: 133 sqrt(2.007007) = 188.4196, 133 sqrt(5.106216) = 300.539
    xs = np.array([0.0, D, -D, 2 * D])
    got = defocus_width_nm(xs, r0_nm=R0, D_nm=D, A=A, B=B)
    np.testing.assert_allclose(got, [133.0, 188.41960, 188.35040, 300.53927], rtol=1e-7)
    # asymmetric only through A: r(D) > r(-D) because A > 0
    assert got[1] > got[2]


def test_peak_amplitude():
    # a(0) = a' / (2 pi r0^2) = 5e7 / (2 pi 17689) = 449.8698
    assert float(peak_amplitude(R0, A_PRIME)) == pytest.approx(A_PRIME / (2 * math.pi * R0**2), rel=1e-12)
    assert float(peak_amplitude(R0, A_PRIME)) == pytest.approx(449.8698, abs=1e-4)
    r = R0 * math.sqrt(2 + A + B)
    assert float(peak_amplitude(r, A_PRIME)) == pytest.approx(5e7 / (2 * math.pi * r * r), rel=1e-12)
    # the peak falls as 1/r^2: r doubles -> a quarters
    assert float(peak_amplitude(2 * R0, A_PRIME)) == pytest.approx(449.8698 / 4, abs=1e-4)


def test_psf_value_at_a_point():
    # molecule at (1000, 2000, 250); plane at 800 -> defocus 550 nm; pixel at (1100, 1950)
    x, y, mx, my, zp, zm = 1100.0, 1950.0, 1000.0, 2000.0, 800.0, 250.0
    u = (zp - zm) / D
    r = R0 * math.sqrt(1 + u**2 + A * u**3 + B * u**4)
    expected = 0.6 * A_PRIME / (2 * math.pi * r * r) * math.exp(-(100.0**2 + 50.0**2) / (2 * r * r))
    got = psf_value(x, y, zp, mx, my, zm, TABLE2, weight=0.6)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # b is added once, and only with include_background
    p = PSFParams(b=7.5)
    assert float(psf_value(x, y, zp, mx, my, zm, p, weight=0.6)) == pytest.approx(expected + 7.5, rel=1e-12)
    no_b = psf_value(x, y, zp, mx, my, zm, p, weight=0.6, include_background=False)
    assert float(no_b) == pytest.approx(expected, rel=1e-12)


def test_psf_value_broadcasts():
    xs = np.array([0.0, 50.0, 100.0])
    got = psf_value(xs, 0.0, 0.0, 0.0, 0.0, 0.0)
    expected = [449.8698 * math.exp(-(v**2) / (2 * R0**2)) for v in xs]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_photons_per_plane():
    # w a' / s^2: a molecule of weight 1 puts 5e7 / 100^2 = 5000 photons into each plane
    assert float(photons_per_plane(1.0, TABLE2, 100.0)) == pytest.approx(5000.0, rel=1e-12)
    np.testing.assert_allclose(
        photons_per_plane(np.array([0.3, 1.0]), TABLE2, 192.0), [0.3 * 5e7 / 192**2, 5e7 / 192**2]
    )
    # the paper's w in [0.3, 1] at s = 192 nm: N = P w a' / s^2 in [1627.6, 5425.3]
    np.testing.assert_allclose(
        P * photons_per_plane(np.array([0.3, 1.0]), TABLE2, 192.0), [1627.6, 5425.3], atol=0.05
    )


def test_render_peak_and_neighbours():
    s = 100.0
    i, j = 4, 3
    n = photons_of_weight(1.0, s)  # 20000 photons, 5000 per plane
    assert n == pytest.approx(20000.0)
    # pixel (i, j) has its centre at ((j + 0.5) s, (i + 0.5) s) = (350, 450); in focus in plane 2
    img = render_one((j + 0.5) * s, (i + 0.5) * s, 800.0, n, s=s)
    assert img.shape == (4, 9, 9)
    assert img.dtype == np.float32
    peak = n / P * s * s / (2 * math.pi * R0**2)  # = w a' / (2 pi r0^2) = 449.87
    assert peak == pytest.approx(449.8698, abs=1e-4)
    assert img[2, i, j] == pytest.approx(peak, rel=1e-6)
    assert np.unravel_index(np.argmax(img[2]), img[2].shape) == (i, j)
    # the four direct neighbours are one pixel (s) away, the diagonals sqrt(2) s
    side = peak * math.exp(-(s**2) / (2 * R0**2))
    diag = peak * math.exp(-2 * s**2 / (2 * R0**2))
    for di, dj in [(-1, 0), (1, 0), (0, -1), (0, 1)]:
        assert img[2, i + di, j + dj] == pytest.approx(side, rel=1e-5)
    for di, dj in [(-1, -1), (-1, 1), (1, -1), (1, 1)]:
        assert img[2, i + di, j + dj] == pytest.approx(diag, rel=1e-5)
    # the other planes: defocus z_plane - z_mol = -800, -400, 400
    for k, defocus in [(0, -800.0), (1, -400.0), (3, 400.0)]:
        r = width(defocus)
        assert img[k, i, j] == pytest.approx(n / P * s * s / (2 * math.pi * r * r), rel=1e-6)
    # defocused planes are dimmer and wider, and plane 4 (400 nm behind) differs from
    # plane 2 (400 nm in front) only through A
    assert img[1, i, j] < img[2, i, j] and img[3, i, j] < img[2, i, j]
    assert img[1, i, j] != pytest.approx(img[3, i, j], rel=1e-6)


def test_render_ignores_a_prime():
    # brightness is in photons: a' of Eq. 6 does not enter the rendering
    x, y, z, n = 420.0, 380.0, 300.0, 3000.0
    np.testing.assert_array_equal(
        render_one(x, y, z, n, params=PSFParams(a_prime=1.0)), render_one(x, y, z, n, params=TABLE2)
    )


def test_render_background_photons_and_padding():
    s = 100.0
    x, y, z = 420.0, 380.0, 300.0
    n = photons_of_weight(1.0, s)
    base = render_one(x, y, z, n, s=s).astype(np.float64)
    # b adds a constant to every pixel
    with_b = render_one(x, y, z, n, s=s, params=PSFParams(b=3.0))
    np.testing.assert_allclose(with_b - base, 3.0, atol=2e-4)
    # the photon count scales linearly
    np.testing.assert_allclose(render_one(x, y, z, 0.3 * n, s=s), 0.3 * base, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(render_one(x, y, z, 0.0, s=s), 0.0, atol=0)
    # a padding molecule (0 photons) anywhere contributes nothing
    xy = np.array([[[x, y]] * 4, [[210.0, 640.0]] * 4])  # (M=2, P, 2)
    two = render_planes(xy, np.array([z, 900.0]), np.array([n, 0.0]), TABLE2, PLANES, (9, 9), s)
    np.testing.assert_array_equal(two, base.astype(np.float32))
    # and two molecules add
    both = render_planes(xy, np.array([z, 900.0]), np.array([n, 0.5 * n]), TABLE2, PLANES, (9, 9), s)
    second = render_one(210.0, 640.0, 900.0, 0.5 * n, s=s)
    np.testing.assert_allclose(both, base + second, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("transmission", [None, (0.27, 0.22, 0.28, 0.23)])
def test_render_matches_hand_formula_everywhere(transmission):
    s = 110.0
    x, y, z, n = 512.3, 377.7, 520.0, 3300.0
    t = np.full(P, 1.0 / P) if transmission is None else np.asarray(transmission)
    img = render_one(x, y, z, n, shape=(7, 10), s=s, transmission=transmission)
    expected = np.zeros((4, 7, 10))
    for k, zp in enumerate(PLANES):
        for i in range(7):
            for j in range(10):
                expected[k, i, j] = gauss_2d((j + 0.5) * s, (i + 0.5) * s, x, y, zp, z, n, s, t[k])
    np.testing.assert_allclose(img, expected, rtol=1e-5, atol=1e-5)


def test_render_equals_eq4_of_the_weight():
    # photons N = P w a' / s^2 under equal transmission reproduce Eq. 4 with Eq. 6: w a(x) exp(...)
    s, w = 110.0, 0.8
    x, y, z = 512.3, 377.7, 520.0
    img = render_one(x, y, z, photons_of_weight(w, s), shape=(7, 10), s=s)
    jj, ii = np.meshgrid(np.arange(10), np.arange(7))
    for k, zp in enumerate(PLANES):
        eq4 = psf_value((jj + 0.5) * s, (ii + 0.5) * s, zp, x, y, z, TABLE2, weight=w)
        np.testing.assert_allclose(img[k], eq4, rtol=1e-5, atol=1e-5)


def test_eq7_drift_identity():
    """f(x - Δk, z_m) = f(x, z_m + Δk): plane k sees the molecule shifted by Δk."""
    s = 100.0
    x, y, z = 440.0, 460.0, 650.0
    n = photons_of_weight(1.0, s)  # so that the image is psf_value's (weight 1)
    drift = np.array([[0.0, 0.0], [31.0, -12.5], [-47.0, 20.0], [8.0, 44.0]])
    img = render_one(x, y, z, n, s=s, drift=drift)
    jj, ii = np.meshgrid(np.arange(9), np.arange(9))
    xc, yc = (jj + 0.5) * s, (ii + 0.5) * s
    for k in range(4):
        # left side: the PSF of the unshifted molecule at the pixel centres x - Δk
        lhs = psf_value(xc - drift[k, 0], yc - drift[k, 1], PLANES[k], x, y, z)
        # right side: the molecule shifted by Δk at the pixel centres x
        rhs = psf_value(xc, yc, PLANES[k], x + drift[k, 0], y + drift[k, 1], z)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
        np.testing.assert_allclose(img[k], lhs, rtol=1e-5, atol=1e-5)
        # and by hand at one pixel
        hand = gauss_2d(4.5 * s, 4.5 * s, x + drift[k, 0], y + drift[k, 1], PLANES[k], z, n, s)
        assert img[k, 4, 4] == pytest.approx(hand, rel=1e-5)
    # drift really moves the image: planes 2-4 differ from the undrifted rendering
    plain = render_one(x, y, z, n, s=s)
    np.testing.assert_array_equal(img[0], plain[0])
    for k in range(1, 4):
        assert np.abs(img[k] - plain[k]).max() > 1.0


def test_render_batch_dimensions():
    # (T, M, P, 2) batches give (T, P, H, W), frame by frame the same as single renders
    xy = np.array([[[[300.0, 300.0]] * 4], [[[500.0, 200.0]] * 4]])  # (T=2, M=1, P, 2)
    out = render_planes(
        xy, np.array([[0.0], [700.0]]), np.array([[2000.0], [1000.0]]), TABLE2, PLANES, (9, 9), 100.0
    )
    assert out.shape == (2, 4, 9, 9)
    np.testing.assert_allclose(out[0], render_one(300.0, 300.0, 0.0, 2000.0), rtol=1e-6)
    np.testing.assert_allclose(out[1], render_one(500.0, 200.0, 700.0, 1000.0), rtol=1e-6)


def pixel_average(mx, my, z_plane, z_mol, i, j, s, n_photons, n=200):
    """Average of Eq. 4 over pixel (i, j) by the midpoint rule on n x n sub-points, for
    n_photons photons under equal transmission."""
    r = width(z_plane - z_mol)
    t = (np.arange(n) + 0.5) / n * s
    ex = np.exp(-((j * s + t - mx) ** 2) / (2 * r * r)).mean()
    ey = np.exp(-((i * s + t - my) ** 2) / (2 * r * r)).mean()
    return n_photons / P * s * s / (2 * math.pi * r * r) * ex * ey


def test_integrate_pixels_narrow_and_wide():
    s = 192.0
    i, j = 4, 4
    n = photons_of_weight(1.0, s)
    x, y = (j + 0.5) * s, (i + 0.5) * s
    # in focus in plane 1 (r = 133 < s): averaging over the pixel lowers the peak by ~15%
    z = 0.0
    point = render_one(x, y, z, n, s=s)
    integ = render_one(x, y, z, n, s=s, integrate=True)
    peak = n / P * s * s / (2 * math.pi * R0**2)  # = a' / (2 pi r0^2)
    assert peak == pytest.approx(A_PRIME / (2 * math.pi * R0**2), rel=1e-12)
    # 1-D average of exp(-t^2/(2 r^2)) over [-s/2, s/2] = r sqrt(pi/2) * 2 erf(s/(2 sqrt2 r)) / s
    f1 = 2 * math.erf(s / 2 / (math.sqrt(2) * R0)) * R0 * math.sqrt(math.pi / 2) / s
    assert integ[0, i, j] == pytest.approx(peak * f1 * f1, rel=1e-5)
    assert integ[0, i, j] < 0.9 * point[0, i, j]
    assert integ[0, i, j] == pytest.approx(pixel_average(x, y, 0.0, z, i, j, s, n), rel=1e-4)
    # an off-centre molecule, all pixels and planes, against the midpoint rule
    x2, y2 = 3.3 * s, 5.8 * s
    integ2 = render_one(x2, y2, 250.0, n, s=s, integrate=True)
    for k, zp in enumerate(PLANES):
        for ii, jj in [(5, 3), (5, 2), (4, 4), (7, 1), (0, 8)]:
            hand = pixel_average(x2, y2, zp, 250.0, ii, jj, s, n)
            assert integ2[k, ii, jj] == pytest.approx(hand, rel=1e-4, abs=1e-6)
    # 4D = 1208 nm below plane 4 the PSF is wide (r ~ 574 nm >> s=100): pixel average ~ point value
    s_small = 100.0
    z_far = PLANES[3] - 4 * D
    assert width(PLANES[3] - z_far) > 5 * s_small
    wide_point = render_one(450.0, 450.0, z_far, n, s=s_small)[3]
    wide_integ = render_one(450.0, 450.0, z_far, n, s=s_small, integrate=True)[3]
    np.testing.assert_allclose(wide_integ, wide_point, rtol=1e-2)


@pytest.mark.parametrize("z_mol", [0.0, 400.0 - 2 * D])
def test_integrate_pixels_conserves_flux(z_mol):
    # sum over a frame that holds the whole PSF (> 6 r each side) = N / P photons per plane
    # (= a' w / s^2 for the molecule of weight w)
    s = 100.0
    w = 0.7
    n = photons_of_weight(w, s)
    x, y = 5000.0 + 13.0, 5000.0 - 27.0
    img = render_one(x, y, z_mol, n, shape=(100, 100), s=s, integrate=True)
    for k in range(4):
        assert 6 * width(PLANES[k] - z_mol) < y
        assert img[k].astype(np.float64).sum() == pytest.approx(n / P, rel=1e-3)
        assert img[k].astype(np.float64).sum() * s * s == pytest.approx(A_PRIME * w, rel=1e-3)


@pytest.mark.parametrize("integrate", [False, True])
@pytest.mark.parametrize("z_mol", [0.0, 600.0, 400.0 - 2 * D])
def test_transmission_scales_each_plane(integrate, z_mol):
    # unequal transmission: plane k's image sums (over a window holding the whole PSF) to N t_k,
    # for point sampling and for pixel integration, at any defocus
    s = 100.0
    n = 4000.0
    t = np.array([0.27, 0.22, 0.28, 0.23])
    x, y = 5000.0 + 13.0, 5000.0 - 27.0
    img = render_one(x, y, z_mol, n, shape=(100, 100), s=s, integrate=integrate, transmission=t)
    equal = render_one(x, y, z_mol, n, shape=(100, 100), s=s, integrate=integrate)
    for k in range(4):
        assert 6 * width(PLANES[k] - z_mol) < y
        total = img[k].astype(np.float64).sum()
        assert total == pytest.approx(n * t[k], rel=1e-3)
        # the shape of each plane's spot is unchanged: only its scale, t_k / (1 / P)
        np.testing.assert_allclose(img[k], equal[k] * (t[k] * P), rtol=1e-5, atol=1e-6)
    # and the planes together hold all N photons
    assert img.astype(np.float64).sum() == pytest.approx(n, rel=1e-3)
