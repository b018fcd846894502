"""Augmented views of a batch of log-mels, computed on the training device.

Every transform works on the whole ``(batch, n_mels, frames)`` dB tensor with per-clip random
settings drawn from one ``torch.Generator`` (no Python loops over clips), so a view costs a few
tensor ops instead of a waveform round trip: pitch shift resamples the mel axis, white noise
is added in the mel power domain with the statistics waveform noise would have, and a time
mask silences a block of frames.
"""

from __future__ import annotations

import functools

import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from asd.config import AugmentConfig, FeatureConfig
from asd.errors import AsdError
from asd.features import log_mel, window_and_filters

# --------------------------------------------------------------------------- pitch


def _hz_to_mel(f: Tensor | float) -> Tensor:
    """HTK mel scale, the one ``log_mel``'s filterbank uses."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def _mel_grid(cfg: FeatureConfig) -> tuple[float, float, Tensor]:
    """``(mel_min, mel_step, centres_hz (n_mels,) float64)`` of the filterbank's triangles."""
    lo, hi = float(_hz_to_mel(cfg.f_min)), float(_hz_to_mel(cfg.f_max))
    step = (hi - lo) / (cfg.n_mels + 1)
    centres = _mel_to_hz(lo + step * torch.arange(1, cfg.n_mels + 1, dtype=torch.float64))
    return lo, step, centres


@functools.lru_cache(maxsize=16)
def _mel_centres(cfg: FeatureConfig, device: torch.device) -> Tensor:
    """Band centres in Hz on ``device``, cached: the training loop never waits on the host."""
    return _mel_grid(cfg)[2].to(device)


def pitch_shift_mel(x: Tensor, semitones: Tensor, cfg: FeatureConfig) -> Tensor:
    """Pitch-shift log-mels by ``semitones (B,)``: ``(B, n_mels, T) -> (B, n_mels, T)`` dB.

    A shift by ``s`` semitones moves frequency ``f`` to ``f * 2**(s/12)``, so output band ``m``
    reads the input at ``f_m / 2**(s/12)``, linearly interpolated (in dB) between the two
    neighbouring bands. Sources below the lowest band centre take the lowest band; sources
    between the top centre and ``f_max`` take the top band; sources above ``f_max`` (downward
    shifts: content the clip never had) get each frame's quietest band, i.e. the clip's own
    noise floor rather than an artificial -100 dB. No bandwidth compensation is applied: it
    would be right for broadband noise but wrong for tones (a tone keeps its power), is close
    to 0 dB above ~1 kHz anyway, and against ``pitch_shift_reference`` it helped upward and
    hurt downward shifts by under 1 dB of mean error, so it is left out.
    """
    if x.dim() != 3 or x.shape[1] != cfg.n_mels:
        raise AsdError(f"pitch_shift_mel needs (batch, {cfg.n_mels}, frames), got {tuple(x.shape)}")
    lo, step, _ = _mel_grid(cfg)
    centres = _mel_centres(cfg, x.device)  # (n_mels,) float64, on x's device: no host sync
    ratio = torch.pow(2.0, semitones.to(device=x.device, dtype=torch.float64) / 12.0)  # (B,)
    source_hz = centres[None, :] / ratio[:, None]  # (B, n_mels)
    pos = (_hz_to_mel(source_hz) - lo) / step - 1.0  # fractional input band index
    above = pos > cfg.n_mels  # source above f_max: nothing there
    pos = pos.clamp(0.0, cfg.n_mels - 1.0).to(x.dtype)
    left = pos.floor().long().clamp(max=cfg.n_mels - 2)  # (B, n_mels)
    frac = (pos - left.to(x.dtype)).unsqueeze(-1)  # (B, n_mels, 1)
    frames = x.shape[-1]
    lo_vals = torch.gather(x, 1, left.unsqueeze(-1).expand(-1, -1, frames))
    hi_vals = torch.gather(x, 1, (left + 1).unsqueeze(-1).expand(-1, -1, frames))
    out = torch.lerp(lo_vals, hi_vals, frac)  # (B, n_mels, T)
    quietest = x.amin(dim=1, keepdim=True).expand_as(out)
    return torch.where(above.unsqueeze(-1), quietest, out)


def pitch_shift_reference(
    waveform: Tensor, semitones: float | Tensor, cfg: FeatureConfig
) -> Tensor:
    """Log-mel of ``torchaudio.functional.pitch_shift(waveform)``: the slow oracle.

    ``waveform`` is ``(samples,)`` or ``(B, samples)``; ``semitones`` a number or ``(B,)``.
    Used only to check :func:`pitch_shift_mel`; slow (seconds per call on a CPU, mostly
    building the resampling kernel for the shift, so clips sharing a shift share one call).
    """
    wave = waveform if waveform.dim() > 1 else waveform[None]  # (B, samples)
    steps = torch.as_tensor(semitones, dtype=torch.float64).reshape(-1).expand(wave.shape[0])
    shifted = torch.empty_like(wave)
    for s in steps.unique().tolist():  # one call per shift: building its resampler is the cost
        rows = steps == s
        shifted[rows] = AF.pitch_shift(wave[rows], cfg.sample_rate, s)  # type: ignore[arg-type]
    out = log_mel(shifted, cfg)
    return out if waveform.dim() > 1 else out[0]


# --------------------------------------------------------------------------- noise


@functools.lru_cache(maxsize=16)
def _noise_model(cfg: FeatureConfig, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per-band mean power of unit-variance white noise, its Gamma shape, and the Parseval sum.

    For white noise of variance s2 the STFT bin power has mean ``s2 * sum(w**2)``
    (Parseval), so band ``m`` has mean ``s2 * sum(w**2) * sum_k fb[k, m]``. Neighbouring
    bins are correlated through the window (``|rho_d|**2``, rho = DFT of ``w**2``), so the band
    is a Gamma variable with ``shape = (sum_k fb)**2 / sum_kl fb_k fb_l |rho_(k-l)|**2``.
    Returns ``(unit_mean (n_mels,), shape (n_mels,), total (scalar))`` where ``total`` is the
    summed mean band power of unit-variance noise (divides a clip's summed mel power to give
    its waveform variance).
    """
    window, fbank = window_and_filters(cfg, torch.device("cpu"))
    w2 = window.double().square()
    energy = w2.sum()
    unit_mean = energy * fbank.double().sum(dim=0)  # (n_mels,)
    rho2 = (torch.fft.fft(w2).abs() / energy).square()  # |rho_d|^2 at lag d (circular)
    n_freqs = fbank.shape[0]
    lags = torch.arange(n_freqs)
    corr = rho2[(lags[:, None] - lags[None, :]).abs()]  # (n_freqs, n_freqs)
    fb = fbank.double()
    var = ((corr @ fb) * fb).sum(dim=0)  # (n_mels,): sum_kl fb_k fb_l |rho|^2
    shape = fb.sum(dim=0).square() / var.clamp_min(1e-12)
    total = unit_mean.sum()
    return (
        unit_mean.float().to(device),
        shape.clamp_min(0.75).float().to(device),
        total.float().to(device),
    )


def add_white_noise(
    x: Tensor, snr_db: Tensor, cfg: FeatureConfig, generator: torch.Generator | None = None
) -> Tensor:
    """Log-mels of the clips with white noise ``snr_db (B,)`` dB below their power added.

    Works in mel power: the clip's waveform power is estimated from its summed mel power
    (Parseval through the window and filterbank, exact for white content), the noise's
    expected band power follows from the same sums, and each (band, frame) is drawn from the
    noncentral chi-square that signal plus Gaussian noise over the band's effective number of
    FFT bins follows (normals from ``generator`` only, so it is reproducible on any device).
    Frames are treated as independent (the 75% frame overlap is ignored).
    ``(B, n_mels, T) -> (B, n_mels, T)`` dB.
    """
    unit_mean, shape, total = _noise_model(cfg, x.device)
    floor = 10.0 ** (cfg.top_db_floor / 10.0)
    power = torch.pow(10.0, x.float() / 10.0)  # (B, n_mels, T)
    signal_var = power.sum(dim=1).mean(dim=1) / total  # (B,) waveform variance estimate
    noise_var = signal_var * torch.pow(10.0, -snr_db.to(x.device, torch.float32) / 10.0)
    mean = noise_var[:, None, None] * unit_mean[None, :, None]  # (B, n_mels, 1)
    # Band power of signal + noise over k effective bins is a scaled noncentral chi-square with
    # 2k degrees of freedom: (sqrt(p) + sqrt(half) z)^2 + half * chi2(2k - 1), half = mean / 2k.
    # Its mean is p + mean, and it holds the Gamma(k) noise spread and the signal-noise cross
    # term while staying positive.
    k = shape[None, :, None]
    half = mean / (2.0 * k)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    coherent = (power.sqrt() + half.sqrt() * z).square()
    a = k - 0.5  # chi2(2k - 1) = 2 Gamma(k - 1/2), Wilson-Hilferty from a normal
    z2 = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    gamma = a * (1.0 - 1.0 / (9.0 * a) + z2 / (3.0 * a.sqrt())).clamp_min(0.0).pow(3)
    noisy = (coherent + 2.0 * half * gamma).clamp_min(floor)
    return (10.0 * torch.log10(noisy)).to(x.dtype)


# --------------------------------------------------------------------------- masks


def time_mask(x: Tensor, mask_frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Silence ``mask_frames (B,)`` consecutive frames at a random place in each clip.

    Masked frames take the clip's minimum (its silence level); ``(B, n_mels, T)`` in and out.
    """
    batch, _, frames = x.shape
    length = mask_frames.to(x.device).long().clamp(0, frames)  # (B,)
    u = torch.rand(batch, generator=generator, device=x.device)
    start = (u * (frames - length + 1).to(u.dtype)).floor().long()  # (B,)
    t = torch.arange(frames, device=x.device)[None, :]  # (1, T)
    masked = (t >= start[:, None]) & (t < (start + length)[:, None])  # (B, T)
    silence = x.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return torch.where(masked[:, None, :], silence, x)


def mask_frames_for(ms: float, frames: int, cfg: FeatureConfig) -> int:
    """Frames of a ``ms`` millisecond mask: at least 1, at most ``frames - 1``."""
    n = round(ms / 1000.0 * cfg.sample_rate / cfg.hop_length)
    return max(0, min(max(n, 1), frames - 1))


# --------------------------------------------------------------------------- views


def _uniform(
    batch: int, lo: float, hi: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    return lo + (hi - lo) * torch.rand(batch, generator=generator, device=device)


def make_views(
    x: Tensor,
    aug: AugmentConfig,
    feat: FeatureConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``aug.n_views`` augmented copies of each clip: ``(B, n_mels, T) -> (B, n_views, n_mels, T)``.

    View ``j`` uses recipe ``aug.recipes[j % len(aug.recipes)]`` with per-clip settings drawn
    from ``generator`` (which must live on ``x.device``).
    """
    batch, _, frames = x.shape
    views = []
    for j in range(aug.n_views):
        recipe = aug.recipes[j % len(aug.recipes)]
        if recipe in ("pitch_up", "pitch_down"):
            s = _uniform(
                batch, aug.pitch_min_semitones, aug.pitch_max_semitones, generator, x.device
            )
            views.append(pitch_shift_mel(x, s if recipe == "pitch_up" else -s, feat))
        elif recipe == "noise":
            snr = _uniform(batch, aug.noise_snr_db_min, aug.noise_snr_db_max, generator, x.device)
            views.append(add_white_noise(x, snr, feat, generator))
        elif recipe in ("mask_short", "mask_long"):
            ms = aug.mask_short_ms if recipe == "mask_short" else aug.mask_long_ms
            n = torch.full((batch,), mask_frames_for(ms, frames, feat), device=x.device)
            views.append(time_mask(x, n, generator))
        else:
            raise AsdError(f"unknown augment recipe '{recipe}' in augment.recipes")
    return torch.stack(views, dim=1)  # (B, n_views, n_mels, T)


class Augmenter(nn.Module):
    """``make_views`` as a module holding its configs: ``(B, n_mels, T) -> (B, V, n_mels, T)``."""

    def __init__(self, aug: AugmentConfig, feat: FeatureConfig) -> None:
        super().__init__()
        self.aug = aug
        self.feat = feat

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Views of ``x`` (see :func:`make_views`)."""
        return make_views(x, self.aug, self.feat, generator)


__all__ = [
    "Augmenter",
    "add_white_noise",
    "make_views",
    "mask_frames_for",
    "pitch_shift_mel",
    "pitch_shift_reference",
    "time_mask",
]
