"""Classical (training-free) infrared/visible fusion baselines, ROS-free (numpy, OpenCV).

Every fuser follows ``fusion.base``: infrared ``float32 (H, W)`` and visible ``float32 (H, W, 3)`` RGB
or ``(H, W)`` grey, all in [0, 1]. Colour inputs are fused on the luminance (Y of YCrCb) and the
visible chroma is kept, so the output is colour exactly when the visible input is.

- ``average``: mean of the infrared and the visible luminance.
- ``max``: per-pixel maximum of the two.
- ``laplacian``: Laplacian pyramid fusion (Burt and Adelson 1983): max-abs on detail levels,
  average on the low-pass base.
- ``gff``: guided filtering based fusion (S. Li, X. Kang, J. Hu, "Image fusion with guided
  filtering", IEEE TIP 22(7), 2013) with the paper's parameters.
- ``cascade``: restore-then-fuse. Estimates the degradations, restores each source with classical
  tools (column destriping and non-local-means for infrared; non-local-means, dark-channel-prior
  dehazing and unsharp masking for visible), then fuses with ``laplacian``.

The guided filter (K. He, J. Sun, X. Tang, TPAMI 2013) is implemented here with box filters:
the installed ``opencv-python-headless`` has no ``cv2.ximgproc`` (a contrib module).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from mex_fusion_ros.fusion.base import FusionResult, check_pair

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def split_luminance(vi: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split visible ``(H, W, 3)`` RGB into luminance ``(H, W)`` and chroma ``(H, W, 2)`` (Cr, Cb).

    A grey ``(H, W)`` image is its own luminance and has no chroma. Values stay in [0, 1].
    """
    if vi.ndim == 2:
        return vi, None
    ycrcb = cv2.cvtColor(vi, cv2.COLOR_RGB2YCrCb)
    return np.ascontiguousarray(ycrcb[..., 0]), np.ascontiguousarray(ycrcb[..., 1:])


def merge_luminance(luminance: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Inverse of ``split_luminance``: ``(H, W)`` luminance (+ chroma) -> float32 image in [0, 1]."""
    luminance = np.clip(luminance, 0.0, 1.0).astype(np.float32, copy=False)
    if chroma is None:
        return luminance
    ycrcb = np.concatenate([luminance[..., None], chroma.astype(np.float32, copy=False)], axis=2)
    return np.clip(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), 0.0, 1.0)


def box_filter(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``(2r+1)²`` window (reflected borders); float32, any number of channels."""
    size = 2 * int(radius) + 1
    return cv2.boxFilter(image, cv2.CV_32F, (size, size), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter (He et al., TPAMI 2013, Algorithm 1).

    ``guide`` and ``source`` are float32 ``(H, W)``; ``eps`` regularises the local linear model
    (for images in [0, 1]). Returns float32 ``(H, W)``: an edge-preserving smoothing of
    ``source`` that follows the edges of ``guide``.
    """
    # The window cannot exceed the image; OpenCV's reflected border would otherwise reuse pixels.
    radius = max(1, min(int(radius), (min(guide.shape[:2]) - 1) // 2))
    guide = guide.astype(np.float32, copy=False)
    source = source.astype(np.float32, copy=False)
    mean_guide = box_filter(guide, radius)
    mean_source = box_filter(source, radius)
    covariance = box_filter(guide * source, radius) - mean_guide * mean_source
    variance = box_filter(guide * guide, radius) - mean_guide * mean_guide
    a = covariance / (variance + eps)
    b = mean_source - a * mean_guide
    return box_filter(a, radius) * guide + box_filter(b, radius)


def _finish(fused_luminance: np.ndarray, chroma: np.ndarray | None, timings: dict[str, float],
            start: float, **extra: np.ndarray | None) -> FusionResult:
    fused = merge_luminance(fused_luminance, chroma)
    timings["total"] = time.perf_counter() - start
    return FusionResult(fused=fused, timings=timings, **extra)


# ---------------------------------------------------------------------------------------------
# Fusion rules
# ---------------------------------------------------------------------------------------------


def pyramid_levels(height: int, width: int, max_levels: int = 5) -> int:
    """Number of detail levels such that the coarsest level is still at least 8 pixels wide."""
    return max(0, min(max_levels, int(math.floor(math.log2(max(1, min(height, width)) / 8))) + 1))


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels`` detail images (fine to coarse) followed by the low-pass base; works for odd sizes."""
    pyramid = []
    current = image
    for _ in range(levels):
        down = cv2.pyrDown(current)
        up = cv2.pyrUp(down, dstsize=(current.shape[1], current.shape[0]))
        pyramid.append(current - up)
        current = down
    pyramid.append(current)
    return pyramid


def collapse_laplacian_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """Inverse of ``laplacian_pyramid``."""
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = cv2.pyrUp(image, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return image


def laplacian_fuse(a: np.ndarray, b: np.ndarray, max_levels: int = 5) -> np.ndarray:
    """Fuse two ``(H, W)`` float32 images: larger-magnitude detail per level, averaged base."""
    levels = pyramid_levels(*a.shape, max_levels=max_levels)
    pyramid_a = laplacian_pyramid(a, levels)
    pyramid_b = laplacian_pyramid(b, levels)
    fused = [np.where(np.abs(da) >= np.abs(db), da, db) for da, db in zip(pyramid_a[:-1], pyramid_b[:-1])]
    fused.append(0.5 * (pyramid_a[-1] + pyramid_b[-1]))
    return collapse_laplacian_pyramid(fused)


@dataclass(frozen=True)
class GFFParameters:
    """Li et al. 2013, Section III: base-layer mean filter, saliency Gaussian, guided-filter pairs."""

    base_radius: int = 15  # 31x31 average filter for the two-scale decomposition
    saliency_radius: int = 5  # Gaussian r_g = 5, sigma_g = 5 applied to |Laplacian|
    saliency_sigma: float = 5.0
    base_guided_radius: int = 45  # r1, eps1 refine the weights of the base layer
    base_guided_eps: float = 0.3
    detail_guided_radius: int = 7  # r2, eps2 refine the weights of the detail layer
    detail_guided_eps: float = 1e-6


def gff_fuse(a: np.ndarray, b: np.ndarray, parameters: GFFParameters | None = None) -> np.ndarray:
    """Guided filtering based fusion of two ``(H, W)`` float32 images in [0, 1]."""
    p = parameters or GFFParameters()
    sources = (a, b)
    bases = [box_filter(image, p.base_radius) for image in sources]
    details = [image - base for image, base in zip(sources, bases)]
    kernel = 2 * p.saliency_radius + 1
    saliencies = [
        cv2.GaussianBlur(np.abs(cv2.Laplacian(image, cv2.CV_32F, ksize=1)), (kernel, kernel),
                         p.saliency_sigma)
        for image in sources
    ]
    # Binary weight maps: which source is most salient at each pixel (ties go to the first).
    first_wins = (saliencies[0] >= saliencies[1]).astype(np.float32)
    masks = (first_wins, 1.0 - first_wins)
    base_weights = [guided_filter(image, mask, p.base_guided_radius, p.base_guided_eps)
                    for image, mask in zip(sources, masks)]
    detail_weights = [guided_filter(image, mask, p.detail_guided_radius, p.detail_guided_eps)
                      for image, mask in zip(sources, masks)]
    fused = np.zeros_like(a)
    for weights, layers in ((base_weights, bases), (detail_weights, details)):
        # The guided filter can overshoot slightly; clip and renormalise so the weights are convex.
        clipped = [np.clip(w, 0.0, 1.0) for w in weights]
        total = clipped[0] + clipped[1] + 1e-6
        fused += (clipped[0] * layers[0] + clipped[1] * layers[1]) / total
    return fused


# ---------------------------------------------------------------------------------------------
# Fusers
# ---------------------------------------------------------------------------------------------


class _LuminanceFuser:
    """Base of the fusers that combine infrared with the visible luminance and keep the chroma."""

    name = ""

    def _rule(self, ir: np.ndarray, luminance: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> FusionResult:
        """Fuse ``ir`` ``(H, W)`` with ``vi`` ``(H, W, 3)``/``(H, W)``, float32 in [0, 1]."""
        check_pair(ir, vi)
        start = time.perf_counter()
        luminance, chroma = split_luminance(vi)
        fused = self._rule(ir, luminance)
        return _finish(fused, chroma, {"fuse": time.perf_counter() - start}, start)


class AverageFuser(_LuminanceFuser):
    """Pixel-wise mean of infrared and visible luminance."""

    name = "average"

    def _rule(self, ir: np.ndarray, luminance: np.ndarray) -> np.ndarray:
        return 0.5 * (ir + luminance)


class MaxFuser(_LuminanceFuser):
    """Pixel-wise maximum of infrared and visible luminance (keeps hot targets and bright areas)."""

    name = "max"

    def _rule(self, ir: np.ndarray, luminance: np.ndarray) -> np.ndarray:
        return np.maximum(ir, luminance)


class LaplacianFuser(_LuminanceFuser):
    """Laplacian pyramid fusion, max-abs detail selection, averaged base (``max_levels`` levels)."""

    name = "laplacian"

    def __init__(self, max_levels: int = 5) -> None:
        self.max_levels = max_levels

    def _rule(self, ir: np.ndarray, luminance: np.ndarray) -> np.ndarray:
        return laplacian_fuse(ir, luminance, self.max_levels)


class GFFFuser(_LuminanceFuser):
    """Guided filtering based fusion (Li et al. 2013), luminance guides the visible weights."""

    name = "gff"

    def __init__(self, parameters: GFFParameters | None = None) -> None:
        self.parameters = parameters or GFFParameters()

    def _rule(self, ir: np.ndarray, luminance: np.ndarray) -> np.ndarray:
        return gff_fuse(ir, luminance, self.parameters)


# ---------------------------------------------------------------------------------------------
# Degradation estimates and classical restoration (for the cascade)
# ---------------------------------------------------------------------------------------------


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise standard deviation of an ``(H, W)`` image, in the image's units.

    Donoho's robust estimator: median absolute value of the finest Haar diagonal (HH) wavelet
    coefficients divided by 0.6745. The HH band is blind to column (and row) offsets, so infrared
    stripe noise does not inflate the estimate.
    """
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if h == 0 or w == 0:
        return 0.0
    x = image[:h, :w].astype(np.float32, copy=False)
    diagonal = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) * 0.5
    return float(np.median(np.abs(diagonal)) / 0.6745)


def dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    """Minimum over colour channels and a ``patch``×``patch`` window (He et al., CVPR 2009)."""
    per_pixel = image.min(axis=2) if image.ndim == 3 else image
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(per_pixel, kernel, borderType=cv2.BORDER_REFLECT)


def luminance_range(luminance: np.ndarray) -> float:
    """Spread between the 1st and 99th percentile of an ``(H, W)`` image in [0, 1] (haze lowers it)."""
    low, high = np.percentile(luminance, (1.0, 99.0))
    return float(high - low)


def blur_metric(image: np.ndarray) -> float:
    """No-reference blur estimate in [0, 1] (0 sharp, 1 very blurred) of an ``(H, W)`` image.

    Crété-Roffet et al., "The blur effect", SPIE 2007: how much of the neighbour variation
    survives an extra 9-tap mean blur, in each direction; the larger loss of variation wins.
    """
    x = image.astype(np.float32, copy=False)
    scores = []
    # cv2 kernel sizes are (width, height): (1, 9) blurs along rows' axis 0, i.e. vertically.
    for axis, kernel in ((0, (1, 9)), (1, (9, 1))):
        blurred = cv2.blur(x, kernel, borderType=cv2.BORDER_REFLECT)
        d_image = np.abs(np.diff(x, axis=axis))
        d_blur = np.abs(np.diff(blurred, axis=axis))
        total = float(d_image.sum())
        if total <= 1e-8:
            return 1.0
        scores.append(float(np.maximum(0.0, d_image - d_blur).sum()) / total)
    return 1.0 - min(scores)


@dataclass(frozen=True)
class CascadeParameters:
    """Thresholds and strengths of the classical restoration; images in [0, 1]."""

    # Denoising: non-local means (Buades et al. 2005, OpenCV's fast variant) when the estimated
    # sigma exceeds this; filter strength h = nlm_strength * sigma (in 8-bit units).
    noise_threshold: float = 4.0 / 255.0
    # 1.3 was best among 1.0 / 1.3 / 1.6 on RoadScene val (noise15, noise50, mixed); 7x7 / 21x21
    # windows were no better and 50 % slower.
    nlm_strength: float = 1.3
    nlm_template: int = 5
    nlm_search: int = 13
    # Chroma of a noisy visible image: guided filter with radius = this * sigma (sigma in [0, 1]);
    # 150 (radius 20 at sigma_Y = 0.13, preset noise50) removed the colour blotches that 60 left.
    chroma_radius_per_sigma: float = 150.0
    chroma_eps: float = 1e-2
    # Dehazing: dark channel prior (He et al. 2009/2011) when the luminance range (1st to 99th
    # percentile) is below this. Haze compresses the range: on RoadScene val, clean 0.47-0.67,
    # hazy (preset "haze") 0.19-0.32. The dark channel itself does not separate them there.
    haze_range_threshold: float = 0.38
    dcp_patch: int = 15
    # Atmospheric light: "mean" (per-channel image mean) or "brightest" (He et al.). He et al.
    # assume a bright, sky-coloured airlight; the haze model of TG-ECNet (Appendix A.1) sets it to
    # the clean image mean, and so does dusk haze on RoadScene, where "brightest" loses ~10 dB.
    dcp_airlight: str = "mean"
    # He et al. use omega 0.95, t0 0.1; clean RoadScene visible images have a bright dark channel
    # (median 0.23-0.64), so full-strength DCP over-corrects: 0.7 / 0.3 gave the best PSNR on
    # RoadScene val "haze" (28.1 dB vs 19.1 dB hazy; 0.95 / 0.1 gave 16.1 dB).
    dcp_omega: float = 0.7
    dcp_t_min: float = 0.3
    dcp_guided_radius: int = 40
    dcp_guided_eps: float = 1e-3
    # Deblurring: unsharp mask when the blur metric exceeds this (RoadScene val: clean 0.28-0.39,
    # preset "defocus" 0.66-0.74).
    blur_threshold: float = 0.5
    unsharp_sigma: float = 2.0
    unsharp_amount: float = 1.5
    # Infrared column destriping when the column-offset profile exceeds this (std, [0, 1] units;
    # RoadScene val: clean 0.3-0.9 / 255, preset "stripe" 13.7-15.5 / 255).
    stripe_threshold: float = 3.0 / 255.0
    stripe_smoothing: int = 7


@dataclass(frozen=True)
class RestorationReport:
    """What the cascade measured on one pair and which restorations it applied."""

    ir_noise_sigma: float
    ir_stripe_strength: float
    vi_noise_sigma: float
    vi_contrast_range: float
    vi_blur: float
    applied: tuple[str, ...]


def column_stripe_profile(ir: np.ndarray, smoothing: int = 7) -> np.ndarray:
    """Per-column offset ``(W,)`` of an ``(H, W)`` infrared image (additive column stripe noise).

    The scene is removed by subtracting a horizontal low-pass (stripes are high horizontal
    frequency and constant along a column); the residual is then averaged down each column with a
    median, so vertical scene edges that cross only part of a column do not leak into the profile.
    """
    kernel = max(3, smoothing | 1)
    horizontal = cv2.blur(ir, (kernel, 1), borderType=cv2.BORDER_REFLECT)
    residual = ir - horizontal
    return np.median(residual, axis=0).astype(np.float32)


def destripe_columns(ir: np.ndarray, smoothing: int = 7, iterations: int = 2) -> np.ndarray:
    """Subtract the estimated column offsets; a second pass removes what the low-pass smeared."""
    restored = ir
    for _ in range(iterations):
        restored = restored - column_stripe_profile(restored, smoothing)[None, :]
    return restored


def nlm_denoise(image: np.ndarray, sigma: float, p: CascadeParameters) -> np.ndarray:
    """Non-local means on an ``(H, W)`` float image in [0, 1] with strength from ``sigma``."""
    as_uint8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    h = float(p.nlm_strength * sigma * 255.0)
    denoised = cv2.fastNlMeansDenoising(as_uint8, None, h=h, templateWindowSize=p.nlm_template,
                                        searchWindowSize=p.nlm_search)
    return denoised.astype(np.float32) / 255.0


def dehaze_dark_channel(vi: np.ndarray, p: CascadeParameters) -> np.ndarray:
    """Dark channel prior dehazing (He, Sun, Tang, CVPR 2009 / TPAMI 2011), guided-filter refined.

    ``vi`` is ``(H, W, 3)`` or ``(H, W)`` float32 in [0, 1]; returns the same shape.
    """
    if p.dcp_airlight == "brightest":
        # He et al.: the brightest input pixel among the 0.1 % haziest (highest dark channel).
        dark = dark_channel(vi, p.dcp_patch)
        count = max(1, dark.size // 1000)
        haziest = np.argpartition(dark.ravel(), -count)[-count:]
        pixels = vi.reshape(dark.size, -1)[haziest]
        atmosphere = pixels[np.argmax(pixels.sum(axis=1))].astype(np.float32)
    else:
        atmosphere = vi.reshape(vi.shape[0] * vi.shape[1], -1).mean(axis=0).astype(np.float32)
    atmosphere = np.maximum(atmosphere, 1e-3)
    normalised = vi / (atmosphere if vi.ndim == 3 else atmosphere[0])
    transmission = 1.0 - p.dcp_omega * dark_channel(normalised.astype(np.float32), p.dcp_patch)
    guide = vi.mean(axis=2) if vi.ndim == 3 else vi
    transmission = guided_filter(guide.astype(np.float32), transmission, p.dcp_guided_radius,
                                 p.dcp_guided_eps)
    transmission = np.maximum(transmission, p.dcp_t_min)
    if vi.ndim == 3:
        transmission = transmission[..., None]
    else:
        atmosphere = atmosphere[0]
    return np.clip((vi - atmosphere) / transmission + atmosphere, 0.0, 1.0).astype(np.float32)


def unsharp_mask(image: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """``image + amount * (image - gaussian(image))`` for ``(H, W)`` float32; not clipped."""
    blurred = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return image + amount * (image - blurred)


class CascadeFuser:
    """Restore-then-fuse: classical restoration of each source, then Laplacian pyramid fusion.

    Infrared: column destriping, then non-local means when noisy. Visible: non-local means on the
    luminance (and a luminance-guided filter on the chroma) when noisy, dark-channel dehazing when
    hazy, unsharp masking when blurred. Each step runs only when its estimate (``RestorationReport``)
    crosses the threshold in ``CascadeParameters``, so clean inputs pass through untouched.
    """

    name = "cascade"

    def __init__(self, parameters: CascadeParameters | None = None, max_levels: int = 5) -> None:
        self.parameters = parameters or CascadeParameters()
        self.max_levels = max_levels
        #: What the last ``fuse`` call measured and applied (for diagnostics and reports).
        self.last_report: RestorationReport | None = None

    def restore_ir(self, ir: np.ndarray) -> tuple[np.ndarray, float, float, list[str]]:
        """Destripe and denoise ``(H, W)`` infrared; returns image, sigma, stripe strength, steps."""
        p = self.parameters
        applied = []
        stripe_strength = float(np.std(column_stripe_profile(ir, p.stripe_smoothing)))
        restored = ir
        if stripe_strength > p.stripe_threshold:
            restored = destripe_columns(restored, p.stripe_smoothing)
            applied.append("ir_destripe")
        sigma = estimate_noise_sigma(restored)
        if sigma > p.noise_threshold:
            restored = nlm_denoise(restored, sigma, p)
            applied.append("ir_denoise")
        return np.clip(restored, 0.0, 1.0).astype(np.float32), sigma, stripe_strength, applied

    def restore_vi(self, vi: np.ndarray) -> tuple[np.ndarray, float, float, float, list[str]]:
        """Denoise, dehaze and sharpen visible; returns image, sigma, contrast range, blur, steps."""
        p = self.parameters
        applied = []
        luminance, chroma = split_luminance(vi)
        sigma = estimate_noise_sigma(luminance)
        if sigma > p.noise_threshold:
            luminance = nlm_denoise(luminance, sigma, p)
            if chroma is not None:
                # Chroma carries little detail: smooth it strongly, but along the edges of the
                # denoised luminance (guided filter) so colours do not bleed across objects.
                radius = max(2, round(p.chroma_radius_per_sigma * sigma))
                chroma = np.stack([guided_filter(luminance, chroma[..., c], radius, p.chroma_eps)
                                   for c in range(2)], axis=2)
            applied.append("vi_denoise")
        restored = merge_luminance(luminance, chroma)
        contrast_range = luminance_range(split_luminance(restored)[0])
        if contrast_range < p.haze_range_threshold:
            restored = dehaze_dark_channel(restored, p)
            applied.append("vi_dehaze")
        luminance, chroma = split_luminance(restored)
        blur = blur_metric(luminance)
        if blur > p.blur_threshold:
            luminance = unsharp_mask(luminance, p.unsharp_sigma, p.unsharp_amount)
            applied.append("vi_deblur")
        return merge_luminance(luminance, chroma), sigma, contrast_range, blur, applied

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> FusionResult:
        """Restore ``ir`` ``(H, W)`` and ``vi`` ``(H, W, 3)``/``(H, W)`` (float32, [0, 1]), then fuse."""
        check_pair(ir, vi)
        start = time.perf_counter()
        restored_ir, ir_sigma, stripes, ir_steps = self.restore_ir(ir)
        after_ir = time.perf_counter()
        restored_vi, vi_sigma, contrast, blur, vi_steps = self.restore_vi(vi)
        after_vi = time.perf_counter()
        luminance, chroma = split_luminance(restored_vi)
        fused = laplacian_fuse(restored_ir, luminance, self.max_levels)
        self.last_report = RestorationReport(ir_sigma, stripes, vi_sigma, contrast, blur,
                                             tuple(ir_steps + vi_steps))
        timings = {"restore_ir": after_ir - start, "restore_vi": after_vi - after_ir,
                   "fuse": time.perf_counter() - after_vi}
        return _finish(fused, chroma, timings, start, restored_ir=restored_ir, restored_vi=restored_vi)


#: Baseline name -> class; ``fusion.registry`` builds fusers from this table.
CLASSICAL_FUSERS: dict[str, type] = {
    AverageFuser.name: AverageFuser,
    MaxFuser.name: MaxFuser,
    LaplacianFuser.name: LaplacianFuser,
    GFFFuser.name: GFFFuser,
    CascadeFuser.name: CascadeFuser,
}
