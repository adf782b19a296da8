"""Noise models of the observation ε in Eq. 3 (Aritake et al. 2020, Sect. 2.1).

Three models, chosen by ``simulation.noise``:

* ``paper``: as the authors' code: y = signal + Poisson(λ) + N(0, σ²), the two noise terms
  additive and independent of the signal (Table 3: λ = 10, σ² = 9);
* ``physical``: a camera: n ~ Poisson(signal + λ) photoelectrons, an EM-CCD register
  (gain g > 1: Gamma(n, g), the excess-noise model) then Gaussian read noise σ² (e⁻²),
  converted to ADU as e / sensitivity + baseline, optionally rounded and clipped to 16 bits;
* ``none``: the expected image itself (noise-free; for checks and CRLB work).

The Poisson background of constant rate is drawn by exact inverse-transform sampling from
32-bit uniform integers with a guide table, ~8x faster than ``Generator.poisson`` at λ = 10;
this is what lets the simulator reach thousands of frames/s on one core. The paper's model
adds both terms in one compiled pass (:mod:`voxloc.physics._noise_kernels`), bit for bit the
array form.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats

from voxloc.types import FloatArray, IntArray

__all__ = [
    "NoiseModel",
    "NOISE_KINDS",
    "add_noise",
    "noise_variance",
    "PixelNoise",
    "poisson_constant",
    "adu_per_photon",
    "signal_gain",
    "adu_to_photons",
    "to_photons",
]

NOISE_KINDS = ("paper", "physical", "none")


@dataclass(frozen=True)
class NoiseModel:
    """Parameters of one noise model (unused fields are ignored by the other kinds)."""

    kind: str = "paper"
    background: float = 10.0  # λ: Poisson rate of the background (photons / pixel)
    read_noise_var: float = 9.0  # σ²: Gaussian noise variance (signal units, or e⁻² for physical)
    em_gain: float = 1.0  # physical: EM multiplication gain (1 = no EM register)
    sensitivity_e_per_adu: float = 1.0  # physical: electrons per ADU
    baseline_adu: float = 0.0  # physical: camera offset in ADU
    quantize: bool = False  # physical: round to integers and clip to [0, 65535]

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {self.kind!r}")
        if self.background < 0 or self.read_noise_var < 0:
            raise ValueError("noise background and read_noise_var must be >= 0")
        if self.em_gain < 1 or self.sensitivity_e_per_adu <= 0:
            raise ValueError("em_gain must be >= 1 and sensitivity_e_per_adu > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def adu_per_photon(model: NoiseModel) -> float:
    """Conversion factor of the ``physical`` model: mean ADU above baseline per photon."""
    return model.em_gain / model.sensitivity_e_per_adu


def signal_gain(model: NoiseModel) -> float:
    """Recorded units per photon of signal: :func:`adu_per_photon` for the ``physical`` model,
    1 for the others (which record photons)."""
    return adu_per_photon(model) if model.kind == "physical" else 1.0


_GUIDE_BITS = 12


@lru_cache(maxsize=16)
def _poisson_tables(lam: float) -> tuple[np.ndarray, np.ndarray]:
    """CDF of Poisson(λ) on the 2^32 integer grid, and the guide table of its inverse."""
    n_max = int(lam + 40.0 * np.sqrt(lam) + 40)
    cdf = np.floor(stats.poisson.cdf(np.arange(n_max), lam) * 2.0**32)
    cdf = np.minimum(cdf, 2.0**32 - 1).astype(np.uint32)
    starts = np.arange(2**_GUIDE_BITS, dtype=np.uint64) << np.uint64(32 - _GUIDE_BITS)
    guide = np.searchsorted(cdf.astype(np.uint64), starts, side="right").astype(np.int32)
    return cdf, guide


def poisson_constant(lam: float, size: tuple[int, ...] | int, rng: np.random.Generator) -> IntArray:
    """Exact Poisson(λ) samples of constant rate by guided inverse-transform sampling.

    u is a uniform 32-bit integer; the result is the smallest n with u < 2^32 F(n), F the
    Poisson CDF (so probabilities are exact to 2^-32). The guide table indexed by the top
    bits of u gives a start n that is at most a few steps below the answer (the search:
    :mod:`voxloc.physics._noise_kernels`).
    """
    if lam == 0:
        return np.zeros(size, dtype=np.int32)
    from voxloc.physics._noise_kernels import poisson_from_uniforms  # numba: only where it is used

    cdf, guide = _poisson_tables(float(lam))
    u = rng.integers(0, 2**32, size=size, dtype=np.uint32)
    return poisson_from_uniforms(u, cdf, guide, _GUIDE_BITS)


def add_noise(signal: FloatArray, model: NoiseModel, rng: np.random.Generator) -> FloatArray:
    """Observed image y of Eq. 3 from the expected image ``signal`` (any shape), float32."""
    signal = np.asarray(signal, dtype=np.float32)
    if model.kind == "none":
        return signal.copy()
    sigma = np.float32(np.sqrt(model.read_noise_var))
    if model.kind == "paper":
        if not (model.background and sigma):
            out = signal + poisson_constant(model.background, signal.shape, rng).astype(np.float32)
            return out + sigma * rng.standard_normal(signal.shape, dtype=np.float32) if sigma else out
        from voxloc.physics._noise_kernels import paper_noise  # numba: only where it is used

        cdf, guide = _poisson_tables(float(model.background))
        u = rng.integers(0, 2**32, size=signal.shape, dtype=np.uint32)
        normal = rng.standard_normal(signal.shape, dtype=np.float32)
        return paper_noise(np.ascontiguousarray(signal), u, normal, sigma, cdf, guide, _GUIDE_BITS)
    # physical: Poisson(signal + λ) = Poisson(λ) + Poisson(signal), exactly (independent sum)
    photons = rng.poisson(np.maximum(signal, 0.0)).astype(np.float32)
    if model.background:
        photons += poisson_constant(model.background, signal.shape, rng)
    if model.em_gain > 1:
        hit = photons > 0
        electrons = np.zeros_like(photons)
        electrons[hit] = rng.gamma(photons[hit], model.em_gain).astype(np.float32)
    else:
        electrons = photons
    if sigma:
        electrons += sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    adu = electrons / np.float32(model.sensitivity_e_per_adu) + np.float32(model.baseline_adu)
    if model.quantize:
        adu = np.clip(np.rint(adu), 0, 65535)
    return adu.astype(np.float32)


def noise_variance(expected: FloatArray, model: NoiseModel) -> FloatArray:
    """Per-pixel variance of y given its expectation (for Fisher information / CRLB).

    ``expected`` is the noise-free signal (photons for ``physical``); the result is in the
    same units as :func:`add_noise`'s output. EM-CCD excess noise doubles the shot-noise
    variance: for n ~ Poisson(μ) and e | n ~ Gamma(n, g), Var e = 2 μ g² exactly, at any
    gain g > 1.
    """
    expected = np.asarray(expected, dtype=np.float64)
    if model.kind == "none":
        return np.zeros_like(expected)
    if model.kind == "paper":
        return np.full_like(expected, model.background + model.read_noise_var)
    excess = 2.0 if model.em_gain > 1 else 1.0
    e_var = excess * model.em_gain**2 * (expected + model.background) + model.read_noise_var
    return e_var / model.sensitivity_e_per_adu**2


@dataclass(frozen=True)
class PixelNoise:
    """The noise of one photon-converted camera pixel (:func:`to_photons`) given its
    expectation μ, background included (the per-molecule fit's μ = N g + b): the likelihood
    that fit maximises (:attr:`likelihood`).

    ``poisson``: Var = F μ + r, with F the excess-noise factor (2 behind an EM register,
    else 1) and r the read noise variance in photons², the likelihood a Poisson of
    (y + c) / F with mean (μ + c) / F, c = r / F (sCMOS / CCD: Huang et al., Nat. Methods 10,
    653, 2013; EM-CCD: the high-gain approximation of the excess noise, Mortensen et al.,
    Nat. Methods 7, 377, 2010). ``constant``: Var = ``constant_var`` whatever the signal,
    a Gaussian likelihood (the paper's noise: Poisson background + read noise added to, not
    drawn from, the signal).
    """

    kind: str = "poisson"
    excess: float = 1.0
    read_var_photons: float = 0.0
    constant_var: float = 1.0

    @classmethod
    def from_model(cls, model: NoiseModel) -> PixelNoise:
        """The pixel noise of the simulator's :class:`NoiseModel` (``none``: unit variance)."""
        if model.kind == "paper":
            return cls("constant", constant_var=model.background + model.read_noise_var)
        if model.kind == "none":
            return cls("constant", constant_var=1.0)
        excess = 2.0 if model.em_gain > 1 else 1.0
        return cls("poisson", excess, model.read_noise_var / model.em_gain**2)

    @classmethod
    def from_camera(cls, camera: str, read_noise_photons: float) -> PixelNoise:
        """An ``emccd`` or ``scmos`` camera of rms read noise ``read_noise_photons`` (in photons:
        electrons rms / EM gain for an EM-CCD, electrons rms for an sCMOS of QE folded in)."""
        if camera not in ("emccd", "scmos"):
            raise ValueError(f"camera noise must be emccd or scmos, got {camera!r}")
        return cls("poisson", 2.0 if camera == "emccd" else 1.0, float(read_noise_photons) ** 2)

    @property
    def shift(self) -> float:
        """c = r / F of the shifted Poisson (0 for ``constant``)."""
        return self.read_var_photons / self.excess if self.kind == "poisson" else 0.0

    def variance(self, mu: FloatArray) -> FloatArray:
        mu = np.asarray(mu, dtype=np.float64)
        if self.kind == "constant":
            return np.full_like(mu, self.constant_var)
        return self.excess * np.maximum(mu, 0.0) + self.read_var_photons

    def nll(self, y: FloatArray, mu: FloatArray, mask: FloatArray) -> FloatArray:
        """Negative log-likelihood per row (last axis summed), up to terms free of μ."""
        if self.kind == "constant":
            return 0.5 * np.sum(mask * (y - mu) ** 2, axis=-1) / self.constant_var
        c = self.shift
        mu_s = np.maximum(mu + c, 1e-9) / self.excess
        y_s = np.maximum(y + c, 0.0) / self.excess
        return np.sum(mask * (mu_s - y_s * np.log(mu_s)), axis=-1)

    @property
    def likelihood(self) -> str:
        if self.kind == "constant":
            return f"Gaussian, constant variance {self.constant_var:g} photons²"
        c = f"c = {self.shift:.3g} photons"
        if self.excess != 1:
            return f"Poisson of (y + c) / {self.excess:g} (EM-CCD excess noise), {c}"
        return f"Poisson of y + c (sCMOS / CCD read noise), {c}"


def adu_to_photons(adu: Any, offset_adu: float, adu_per_photon: float) -> Any:
    """Camera ADU -> photons, float32: (adu - offset_adu) / adu_per_photon.

    The one conversion of recorded pixels (bead stacks, movies, ``physical`` shards). A numpy
    array (or anything :func:`numpy.asarray` takes) is converted in float32 arithmetic; a
    torch tensor on its own device (``tensor.float()`` and Python-float scalars: the GPU path
    of localization), without this module importing torch.
    """
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if torch is not None and isinstance(adu, torch.Tensor):
        return (adu.float() - float(offset_adu)) / float(adu_per_photon)
    return (np.asarray(adu, np.float32) - np.float32(offset_adu)) / np.float32(adu_per_photon)


def to_photons(frames: FloatArray, noise: NoiseModel) -> FloatArray:
    """Stored frames -> photons: ``physical`` shards are ADU ((y - baseline) / gain), others as is."""
    if noise.kind == "physical":
        return adu_to_photons(frames, noise.baseline_adu, adu_per_photon(noise))
    return np.asarray(frames, np.float32)
