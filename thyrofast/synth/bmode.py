"""B-mode image formation by the convolution model (Bamber & Dickinson 1980).

tissue map (mean backscatter amplitude x transmission) -> complex Gaussian
scatterers -> depth-dependent PSF (axial Gaussian pulse envelope, lateral beam
width growing away from the transmit focus) -> envelope -> depth attenuation
with partial time-gain compensation -> log compression -> 8 bits.

Working in the complex baseband (IQ) domain keeps it cheap: the PSF is real,
the envelope is ``|IQ|``, and a homogeneous region gives exactly Rayleigh
amplitude statistics (mean/SD = sqrt(pi/(4-pi)) = 1.913).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import convolve1d

SOUND_SPEED_MM_US = 1.54  # mm per microsecond
RAYLEIGH_MEAN_OVER_SD = float(np.sqrt(np.pi / (4.0 - np.pi)))


@dataclass(frozen=True)
class Probe:
    """Linear-array probe and system settings for one image."""

    f0_mhz: float = 10.0  # centre frequency
    fractional_bandwidth: float = 0.6
    f_number: float = 3.0  # transmit/receive aperture F-number at the focus
    focus_mm: float = 15.0
    rayleigh_range_mm: float = 7.0  # depth of field scale: beam doubles ~1.7x this far from focus
    attenuation_db_cm_mhz: float = 0.5  # one way
    tgc_compensation: float = 0.9  # share of the round-trip attenuation the TGC undoes
    gain_db: float = 0.0
    dynamic_range_db: float = 55.0
    noise_level: float = 0.015  # electronic noise, relative to parenchyma amplitude

    def axial_fwhm_mm(self) -> float:
        # pulse-echo resolution c / (2 * bandwidth), doubled for the receive filter and
        # display interpolation of real systems (speckle grains ~0.25 mm at 10 MHz)
        return SOUND_SPEED_MM_US / (self.fractional_bandwidth * self.f0_mhz)

    def lateral_fwhm_mm(self, depth_mm: np.ndarray) -> np.ndarray:
        wavelength = SOUND_SPEED_MM_US / self.f0_mhz
        w0 = 1.02 * wavelength * self.f_number
        return w0 * np.sqrt(1.0 + ((depth_mm - self.focus_mm) / self.rayleigh_range_mm) ** 2)


_FWHM_TO_SIGMA = 1.0 / 2.3548


def speckle_envelope(amplitude: np.ndarray, spacing_mm: float, probe: Probe,
                     rng: np.random.Generator) -> np.ndarray:
    """Envelope (linear amplitude, before gain and log compression) of a tissue map.

    ``amplitude``: (H, W) float32 mean backscatter amplitude; rows are depth.
    """
    h, w = amplitude.shape
    # random scatterers, one per pixel, weighted by the map.  Uniform I and Q (cheaper
    # than Gaussian draws) become circular Gaussian after the PSF sums many of them
    # (central limit), as physical scatterers with random phase do.  Electronic noise
    # (independent, same band) adds in quadrature.
    iq = rng.random((h, w, 2), dtype=np.float32)
    iq -= np.float32(0.5)
    iq = iq.view(np.complex64)[..., 0]
    weight = np.sqrt(amplitude * amplitude + np.float32(probe.noise_level**2)) * np.float32(np.sqrt(12.0))
    iq *= weight
    # axial pulse envelope: short real Gaussian kernel, applied to I and Q
    sig_ax = max(probe.axial_fwhm_mm() * _FWHM_TO_SIGMA / spacing_mm, 0.35)
    half = int(np.ceil(3.0 * sig_ax))
    k = np.exp(-0.5 * (np.arange(-half, half + 1, dtype=np.float32) / np.float32(sig_ax)) ** 2)
    k /= np.sqrt((k * k).sum())
    out = np.empty((h, w), np.complex64)
    out.real = convolve1d(iq.real, k, axis=0, mode="nearest")
    out.imag = convolve1d(iq.imag, k, axis=0, mode="nearest")
    iq = out
    # lateral beam: Gaussian whose width depends on depth -> per-row transfer function
    depth = (np.arange(h, dtype=np.float32) + 0.5) * spacing_mm
    sig_lat = probe.lateral_fwhm_mm(depth) * _FWHM_TO_SIGMA / spacing_mm  # px, per row
    # transfer functions for 48 beam widths; each row uses the nearest (cheap, smooth in depth)
    levels = np.linspace(sig_lat.min(), sig_lat.max() + 1e-6, 48, dtype=np.float32)
    fx = sfft.fftfreq(w).astype(np.float32)
    table = np.exp(-2.0 * np.pi**2 * (levels[:, None] ** 2) * (fx[None, :] ** 2)).astype(np.float32)
    # unit energy per row keeps mean speckle brightness independent of beam width
    table *= np.sqrt(w / np.maximum((table * table).sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)
    idx = np.rint((sig_lat - levels[0]) / max(levels[1] - levels[0], 1e-6)).astype(np.intp)
    spec = sfft.fft(iq, axis=1, overwrite_x=True)
    spec *= table[np.clip(idx, 0, 47)]
    iq = sfft.ifft(spec, axis=1, overwrite_x=True)
    return np.abs(iq).astype(np.float32, copy=False)


def depth_gain_db(h: int, spacing_mm: float, probe: Probe, rng: np.random.Generator) -> np.ndarray:
    """Net gain per row in dB: overall gain, residual attenuation after TGC, slider ripple."""
    depth_cm = (np.arange(h, dtype=np.float32) + 0.5) * spacing_mm / 10.0
    round_trip = 2.0 * probe.attenuation_db_cm_mhz * probe.f0_mhz * depth_cm
    residual = -(1.0 - probe.tgc_compensation) * round_trip
    # eight TGC sliders, each a little off, interpolated smoothly over depth
    sliders = rng.normal(0.0, 1.2, size=8).astype(np.float32)
    ripple = np.interp(np.linspace(0, 7, h), np.arange(8), sliders).astype(np.float32)
    return (probe.gain_db + residual + ripple).astype(np.float32)


def log_compress(envelope: np.ndarray, gain_db_rows: np.ndarray, dynamic_range_db: float,
                 reference: float = 1.0, level: float = 0.62, gamma: float = 1.5) -> np.ndarray:
    """Envelope -> 8-bit grey levels: 20 log10, window [top - DR, top], grey map x**gamma.

    The parenchyma (mean envelope ~ ``reference``) sits at ``level`` of the window; the
    power-law grey map is the contrast-enhancing curve scanners apply after compression.
    """
    top = 20.0 * np.log10(reference) + (1.0 - level) * dynamic_range_db
    # gain folded in as a per-row factor on the envelope; then a 4096-entry grey-map table
    row_gain = (10.0 ** ((gain_db_rows - (top - dynamic_range_db)) / 20.0)).astype(np.float32)
    db = np.log10(np.maximum(envelope * row_gain[:, None], 1e-6))
    db *= np.float32(20.0 * 4095.0 / dynamic_range_db)
    idx = np.clip(db, 0, 4095).astype(np.int16)
    lut = (255.0 * np.linspace(0.0, 1.0, 4096) ** gamma + 0.5).astype(np.uint8)
    return lut[idx]


def transmission(alpha: np.ndarray, lateral_sigma_px: float = 1.5) -> np.ndarray:
    """Two-way transmitted amplitude below each pixel from excess attenuation ``alpha``
    (per pixel; >0 shadows behind calcification/air, <0 enhancement behind fluid)."""
    from scipy.ndimage import gaussian_filter1d

    acc = np.cumsum(alpha, axis=0, dtype=np.float32)
    acc -= alpha  # a pixel is not shadowed by itself
    t = np.exp(-np.clip(acc, -1.2, 12.0)).astype(np.float32)
    if lateral_sigma_px > 0:
        t = gaussian_filter1d(t, lateral_sigma_px, axis=1, mode="nearest")
    return t


def form_image(amplitude: np.ndarray, alpha: np.ndarray, spacing_mm: float, probe: Probe,
               rng: np.random.Generator, *, return_envelope: bool = False):
    """Tissue maps -> 8-bit B-mode image of the same shape (optionally the raw envelope)."""
    t = transmission(alpha)
    env = speckle_envelope(amplitude * t, spacing_mm, probe, rng)
    g = depth_gain_db(amplitude.shape[0], spacing_mm, probe, rng)
    # mean Rayleigh envelope of unit-amplitude parenchyma is sqrt(pi)/2 ... reference ~1
    img = log_compress(env, g, probe.dynamic_range_db, reference=1.2533)
    if return_envelope:
        return img, env, t
    return img
