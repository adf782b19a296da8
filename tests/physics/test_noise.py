"""Noise models of Eq. 3: moments against hand-derived formulas, within 5 standard errors.

Standard errors: the sample mean of n draws has SE sqrt(var / n); the sample variance has
SE sqrt((m4 - var^2) / n), m4 the fourth central moment, estimated from the sample itself
(independent of the formula being tested).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from voxloc.physics.noise import NoiseModel, add_noise, adu_per_photon, noise_variance, poisson_constant

N = 400_000  # draws per signal level
LEVELS = (0.0, 7.5, 120.0)  # expected signal per pixel


def signal_columns() -> np.ndarray:
    """(N, 3) float32 image whose column q holds the constant signal LEVELS[q]."""
    return np.tile(np.array(LEVELS, dtype=np.float32), (N, 1))


def check_moments(sample: np.ndarray, mean: float, var: float, n_se: float = 5.0) -> None:
    x = sample.astype(np.float64)
    n = x.size
    m = x.mean()
    d = x - m
    v = (d * d).sum() / (n - 1)
    m4 = (d**4).mean()
    se_mean = math.sqrt(var / n)
    se_var = math.sqrt(max(m4 - v * v, 0.0) / n)
    assert abs(m - mean) < n_se * se_mean, f"mean {m} vs {mean} (SE {se_mean})"
    assert abs(v - var) < n_se * se_var, f"variance {v} vs {var} (SE {se_var})"


def test_paper_model_moments():
    # y = s + Poisson(λ) + N(0, σ²): mean s + λ, variance λ + σ², whatever s is
    lam, var_read = 10.0, 9.0
    model = NoiseModel("paper", background=lam, read_noise_var=var_read)
    y = add_noise(signal_columns(), model, np.random.default_rng(1))
    assert y.dtype == np.float32 and y.shape == (N, 3)
    for q, s in enumerate(LEVELS):
        check_moments(y[:, q], s + lam, lam + var_read)
    np.testing.assert_allclose(noise_variance(np.array(LEVELS), model), [19.0, 19.0, 19.0])


def test_paper_model_compiled_pass_equals_its_array_form():
    # the one-pass kernel draws the same uniforms and normals as poisson_constant + normal
    model = NoiseModel("paper", background=10.0, read_noise_var=9.0)
    signal = np.random.default_rng(5).uniform(0, 300, (3, 4, 17, 19)).astype(np.float32)
    y = add_noise(signal, model, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    expect = signal + poisson_constant(10.0, signal.shape, rng).astype(np.float32)
    expect += np.float32(3.0) * rng.standard_normal(signal.shape, dtype=np.float32)
    np.testing.assert_array_equal(y, expect)
    # a non-contiguous view gives the same as its copy
    view = np.random.default_rng(6).uniform(0, 50, (8, 9)).astype(np.float32)[:, ::2]
    y1 = add_noise(view, model, np.random.default_rng(4))
    np.testing.assert_array_equal(y1, add_noise(view.copy(), model, np.random.default_rng(4)))


def test_paper_model_without_read_noise_is_integer_offset():
    model = NoiseModel("paper", background=4.0, read_noise_var=0.0)
    y = add_noise(np.full((1000,), 2.5, dtype=np.float32), model, np.random.default_rng(2))
    np.testing.assert_array_equal(y - 2.5, np.rint(y - 2.5))
    assert (y >= 2.5).all()


@pytest.mark.parametrize(
    ("gain", "sens", "baseline", "var_read"),
    [
        (1.0, 1.0, 0.0, 0.0),  # photon counting: pure Poisson
        (1.0, 0.45, 100.0, 2.0),  # sCMOS-like: no EM register
        (300.0, 12.0, 500.0, 25.0),  # EM-CCD
    ],
)
def test_physical_model_moments(gain, sens, baseline, var_read):
    """n ~ Poisson(μ), μ = s + λ; EM register e | n ~ Gamma(n, g); read noise σ²; ADU = e/sens + baseline.

    Without EM gain: E e = μ, Var e = μ.  With EM gain: E e = E[n] g = μ g and
    Var e = E[Var(e | n)] + Var(E[e | n]) = E[n g²] + Var(n g) = μ g² + μ g² = 2 μ g².
    Then read noise adds σ², and ADU divides the variance by sens².
    """
    lam = 3.0
    model = NoiseModel(
        "physical",
        background=lam,
        read_noise_var=var_read,
        em_gain=gain,
        sensitivity_e_per_adu=sens,
        baseline_adu=baseline,
    )
    y = add_noise(signal_columns(), model, np.random.default_rng(3))
    excess = 2.0 if gain > 1 else 1.0
    for q, s in enumerate(LEVELS):
        mu = s + lam
        mean = mu * gain / sens + baseline
        var = (excess * gain**2 * mu + var_read) / sens**2
        check_moments(y[:, q], mean, var)
        assert float(noise_variance(np.array(s), model)) == pytest.approx(var, rel=1e-12)
    assert adu_per_photon(model) == pytest.approx(gain / sens)


def test_physical_zero_photons_give_zero_electrons():
    # no signal, no background, no read noise: the output is exactly the baseline
    model = NoiseModel("physical", background=0.0, read_noise_var=0.0, em_gain=50.0, baseline_adu=100.0)
    y = add_noise(np.zeros(1000, dtype=np.float32), model, np.random.default_rng(4))
    np.testing.assert_array_equal(y, 100.0)


def test_physical_quantize_rounds_and_clips():
    model = NoiseModel("physical", background=2.0, read_noise_var=4.0, baseline_adu=100.0, quantize=True)
    y = add_noise(np.full(10_000, 5.0, dtype=np.float32), model, np.random.default_rng(5))
    np.testing.assert_array_equal(y, np.rint(y))
    assert y.mean() == pytest.approx(107.0, abs=5 * math.sqrt((7.0 + 4.0 + 1 / 12) / y.size))
    big = NoiseModel("physical", background=0.0, read_noise_var=0.0, em_gain=1000.0, quantize=True)
    assert add_noise(np.full(10, 1e3, dtype=np.float32), big, np.random.default_rng(6)).max() == 65535.0
    low = NoiseModel("physical", background=0.0, read_noise_var=100.0, quantize=True)
    assert add_noise(np.zeros(1000, dtype=np.float32), low, np.random.default_rng(7)).min() == 0.0


def test_none_returns_the_input():
    sig = np.random.default_rng(8).uniform(0, 100, size=(3, 4, 5, 6)).astype(np.float32)
    model = NoiseModel("none")
    out = add_noise(sig, model, np.random.default_rng(9))
    np.testing.assert_array_equal(out, sig)
    assert out is not sig and out.dtype == np.float32
    np.testing.assert_array_equal(noise_variance(sig, model), 0.0)


def test_noise_variance_matches_empirical_variance():
    rng = np.random.default_rng(10)
    expected = np.array([0.0, 2.0, 40.0, 400.0])
    for model in [
        NoiseModel("paper", background=10.0, read_noise_var=9.0),
        NoiseModel("physical", background=5.0, read_noise_var=3.0, em_gain=20.0, sensitivity_e_per_adu=4.0),
        NoiseModel(
            "physical", background=1.0, read_noise_var=1.0, sensitivity_e_per_adu=0.5, baseline_adu=10
        ),
        NoiseModel("none"),
    ]:
        y = add_noise(np.tile(expected.astype(np.float32), (100_000, 1)), model, rng).astype(np.float64)
        emp = y.var(axis=0, ddof=1)
        pred = noise_variance(expected, model)
        if model.kind == "none":
            np.testing.assert_array_equal(emp, 0.0)
            continue
        d = y - y.mean(axis=0)
        se = np.sqrt(((d**4).mean(axis=0) - emp**2) / y.shape[0])
        assert np.all(np.abs(emp - pred) < 5 * se), (model, emp, pred, se)


@pytest.mark.parametrize("lam", [0.5, 10.0, 37.2])
def test_poisson_constant_matches_pmf(lam):
    n = 300_000
    x = poisson_constant(lam, n, np.random.default_rng(11))
    assert x.shape == (n,) and np.issubdtype(x.dtype, np.integer)
    assert x.min() >= 0
    counts = np.bincount(x)
    k = np.arange(counts.size)
    p = stats.poisson.pmf(k, lam)
    freq = counts / n
    # every bin within 5 binomial standard errors (+1/n for bins of probability ~0)
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * se + 1.0 / n), np.max(np.abs(freq - p) / (se + 1e-300))
    # chi-square over bins of expected count >= 20, the tail merged into one bin
    big = np.flatnonzero(n * p >= 20)
    lo, hi = big.min(), big.max()
    obs = np.concatenate([[counts[:lo].sum()], counts[lo : hi + 1], [n - counts[: hi + 1].sum()]])
    exp = n * np.concatenate([[stats.poisson.cdf(lo - 1, lam)], p[lo : hi + 1], [stats.poisson.sf(hi, lam)]])
    keep = exp > 0
    chi2 = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = keep.sum() - 1
    assert stats.chi2.sf(chi2, dof) > 1e-4, (chi2, dof)
    # and the first two moments
    check_moments(x, lam, lam)


def test_poisson_constant_zero_rate_and_shapes():
    z = poisson_constant(0, (3, 4), np.random.default_rng(12))
    assert z.shape == (3, 4)
    np.testing.assert_array_equal(z, 0)
    x = poisson_constant(2.0, (5, 6, 7), np.random.default_rng(13))
    assert x.shape == (5, 6, 7)


def test_poisson_constant_seed_reproducibility():
    a = poisson_constant(10.0, 10_000, np.random.default_rng(42))
    b = poisson_constant(10.0, 10_000, np.random.default_rng(42))
    c = poisson_constant(10.0, 10_000, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "model",
    [
        NoiseModel("paper"),
        NoiseModel("physical", em_gain=100.0, sensitivity_e_per_adu=5.0, baseline_adu=100.0),
        NoiseModel("physical"),
    ],
)
def test_add_noise_seed_reproducibility(model):
    sig = np.random.default_rng(0).uniform(0, 50, size=(2, 4, 8, 8)).astype(np.float32)
    a = add_noise(sig, model, np.random.default_rng(7))
    b = add_noise(sig, model, np.random.default_rng(7))
    c = add_noise(sig, model, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "gaussian"},
        {"background": -1.0},
        {"read_noise_var": -0.1},
        {"em_gain": 0.5},
        {"sensitivity_e_per_adu": 0.0},
    ],
)
def test_noise_model_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        NoiseModel(**kwargs)


def test_table3_defaults():
    m = NoiseModel()
    assert (m.kind, m.background, m.read_noise_var) == ("paper", 10.0, 9.0)
