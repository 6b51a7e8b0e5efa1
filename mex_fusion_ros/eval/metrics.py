"""Image-fusion quality metrics as defined in the infrared/visible fusion literature.

ROS-free and torch-free (numpy and OpenCV's filters only). Every metric works on grey images in
float64 on the 0–255 scale; :func:`to_gray` brings any accepted input there:

- accepted inputs: ``uint8`` (0–255), ``uint16`` (scaled by 255/65535), or float in [0, 1]
  (the project convention); shapes ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` RGB;
- colour → grey: ITU-R BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (the weights of OpenCV's
  ``COLOR_RGB2GRAY`` and, to three decimals, MATLAB's ``rgb2gray``), without rounding;
- histogram metrics (EN, MI) bin the grey values rounded to the nearest integer, 256 bins (0..255).

Two kinds of metric (see :data:`METRICS`):

- ``image``: a property of the fused image alone — EN, SD, SF, AG;
- ``source``: the fused image against the two source images — MI, SCD, VIF, Q_abf, N_abf, SSIM,
  MS-SSIM, CC, MSE, PSNR. :func:`fusion_metrics` measures them against the clean sources when they
  are given (degraded-input evaluation, as TG-ECNet does), else against the fusion inputs.

Two-source conventions (docs/metrics.md gives the sources and a comparison with reference code):

- summed over the sources: MI = MI(F, A) + MI(F, B); VIF = VIF(A, F) + VIF(B, F) (as the common
  MATLAB code of Tang et al. and CDDFuse's Python evaluator do);
- defined on both sources jointly: Q_abf, N_abf, SCD;
- averaged over the sources (TG-ECNet, Tang's MSE/CC/PSNR/SSIM code): SSIM, MS-SSIM, CC, MSE; PSNR
  is computed from that averaged MSE. CDDFuse's evaluator and the IVIF_ZOO port *sum* SSIM (and
  MS-SSIM) over the two sources, so theirs is twice ours.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

#: ITU-R BT.601 luma weights for R, G, B.
BT601_LUMA = (0.299, 0.587, 0.114)
GRAY_CONVERSION = "ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of RGB, on the 0-255 scale"

#: Number of grey levels of the EN and MI histograms (8-bit images).
HISTOGRAM_BINS = 256

# SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 13(4), 2004): constants of the paper.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DYNAMIC_RANGE = 255.0

# MS-SSIM (Wang, Simoncelli & Bovik, Asilomar 2003): exponents of the five scales, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# Q_abf (Xydeas & Petrovic, Electronics Letters 36(4), 2000): sigmoid constants and weight exponent.
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
QABF_L = 1.0

# N_abf (Shreyamsha Kumar, SIViP 2013 / his objective_fusion_perform_fn.m): Petrovic constants as
# set in that code; gradients use Sobel kernels divided by 8.
NABF_TD = 2.0
NABF_WT_MIN = 0.001
NABF_LG = 1.5
NABF_NRG, NABF_KG, NABF_SIGMAG = 0.9999, 19.0, 0.5
NABF_NRA, NABF_KA, NABF_SIGMAA = 0.9995, 22.0, 0.5

# Pixel-domain VIF (Sheikh & Bovik, IEEE TIP 15(2), 2006; LIVE's vifp_mscale.m): noise variance of
# the HVS model and the 4 scales' Gaussian window sizes (sigma = size / 5).
VIF_SIGMA_NSQ = 2.0
VIF_WINDOWS = (17, 9, 5, 3)
# Smallest side for which all four 'valid' scales are non-empty: side n becomes ceil((n - 8) / 2),
# then ceil((n - 4) / 2), then ceil((n - 2) / 2) >= 3 (the 3-px window), so n >= 41.
VIF_MIN_SIZE = 41
_VIF_EPS = 1e-10

#: A two-source metric on grey 0-255 images (A, B, F).
_SourceMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means: ``kind`` 'image' (fused image only) or 'source' (against the sources).

    ``min_side``: the smallest image side (px) the metric is defined for.
    """

    name: str
    higher_is_better: bool
    kind: Literal["image", "source"]
    description: str
    min_side: int = 1

    @property
    def arrow(self) -> str:
        """'↑' when higher is better, '↓' when lower is better."""
        return "\u2191" if self.higher_is_better else "\u2193"


_IMAGE: Literal["image"] = "image"
_SOURCE: Literal["source"] = "source"

#: Every metric of :func:`fusion_metrics`, in report order.
METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo("EN", True, _IMAGE, "Shannon entropy of the fused image, bits (256 bins, 0-8)"),
        MetricInfo("SD", True, _IMAGE, "standard deviation of the fused image (contrast), 0-255 scale"),
        MetricInfo("SF", True, _IMAGE, "spatial frequency sqrt(RF^2 + CF^2) of the fused image, 0-255", 2),
        MetricInfo("AG", True, _IMAGE, "average gradient of the fused image, 0-255 scale", 2),
        MetricInfo("MI", True, _SOURCE, "mutual information MI(F,A) + MI(F,B), bits, 256x256 histogram"),
        MetricInfo("SCD", True, _SOURCE, "sum of the correlations of differences corr(F-B,A) + corr(F-A,B)"),
        MetricInfo("VIF", True, _SOURCE, "pixel-domain visual information fidelity VIF(A,F) + VIF(B,F)",
                   VIF_MIN_SIZE),
        MetricInfo("Q_abf", True, _SOURCE, "Xydeas-Petrovic edge-information transfer Q^AB/F, 0-1"),
        MetricInfo("N_abf", False, _SOURCE, "Kumar's modified fusion-artifact measure N_abf, 0-1", 2),
        MetricInfo("SSIM", True, _SOURCE, "SSIM (Wang 2004) of F with each source, averaged", SSIM_WINDOW),
        MetricInfo("MS-SSIM", True, _SOURCE, "MS-SSIM (Wang 2003, 5 scales) of F with each source, averaged",
                   SSIM_WINDOW),
        MetricInfo("CC", True, _SOURCE, "Pearson correlation of F with each source, averaged"),
        MetricInfo("MSE", False, _SOURCE, "mean squared error of F to each source, [0,1] scale, averaged"),
        MetricInfo("PSNR", True, _SOURCE, "10 log10(1 / MSE) in dB, from the averaged [0,1]-scale MSE"),
    )
}


# --------------------------------------------------------------------------- input conversion


def to_gray(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey ``float64 (H, W)`` on the 0–255 scale from a uint8/uint16/float-[0,1] image.

    ``image``: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` RGB. Colour is converted with the
    BT.601 luma weights (:data:`BT601_LUMA`). Raises ``ValueError`` naming ``name`` for any
    other shape, dtype, or float values outside [0, 1] (beyond a 1e-6 rounding tolerance).
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"{name}: expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    if array.dtype == np.uint8:
        scaled = array.astype(np.float64)
    elif array.dtype == np.uint16:
        scaled = array.astype(np.float64) * (255.0 / 65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: float image holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -1e-6 or high > 1.0 + 1e-6:
            raise ValueError(f"{name}: float images must lie in [0, 1], found [{low:.6g}, {high:.6g}]")
        scaled = np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0
    else:
        raise ValueError(f"{name}: unsupported pixel type {array.dtype} (expected uint8, uint16, float)")
    if scaled.ndim == 3:
        scaled = scaled @ np.asarray(BT601_LUMA, dtype=np.float64)
    return scaled


def _gray_images(names: Sequence[str], images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Grey versions of ``images``; ``ValueError`` naming each image when their sizes differ."""
    grays = [to_gray(image, name) for name, image in zip(names, images)]
    shapes = {gray.shape for gray in grays}
    if len(shapes) > 1:
        described = ", ".join(f"{name} {gray.shape[1]}x{gray.shape[0]}" for name, gray in zip(names, grays))
        raise ValueError(f"images differ in size ({described}); register or resize them first")
    return grays


def _levels(gray: np.ndarray) -> np.ndarray:
    """Integer grey levels 0..255 for the histogram metrics (round to nearest)."""
    return np.clip(np.rint(gray), 0, HISTOGRAM_BINS - 1).astype(np.intp)


def _require_min_size(gray: np.ndarray, minimum: int, metric: str, why: str) -> None:
    if min(gray.shape) < minimum:
        height, width = gray.shape
        raise ValueError(f"{metric} needs at least {minimum}x{minimum} px ({why}), got {width}x{height}")


# --------------------------------------------------------------------------- image-only metrics


def entropy(image: np.ndarray) -> float:
    """EN: Shannon entropy ``-Σ p_l log2 p_l`` of the 256-bin grey histogram, in bits (0–8).

    Roberts, van Aardt & Ahmed, J. Appl. Remote Sens. 2(1), 2008. Grey values are rounded to the
    nearest of the 256 levels (as ``np.uint8(np.round(img))`` in CDDFuse and MATLAB's uint8 input).
    """
    return _entropy(to_gray(image))


def _shannon_bits(probabilities: np.ndarray) -> float:
    """−Σ p log2 p over the non-zero probabilities (0 log 0 = 0)."""
    nonzero = probabilities[probabilities > 0]
    # + 0.0 turns the -0.0 of a single-level histogram into 0.0
    return float(-np.sum(nonzero * np.log2(nonzero)) + 0.0)


def _entropy(gray: np.ndarray) -> float:
    levels = _levels(gray)
    return _shannon_bits(np.bincount(levels.ravel(), minlength=HISTOGRAM_BINS) / levels.size)


def standard_deviation(image: np.ndarray) -> float:
    """SD: population standard deviation (ddof = 0) of the grey values, 0–255 scale (Rao 1997)."""
    return _standard_deviation(to_gray(image))


def _standard_deviation(gray: np.ndarray) -> float:
    return float(np.std(gray))


def spatial_frequency(image: np.ndarray) -> float:
    """SF = sqrt(RF² + CF²) (Eskicioglu & Fisher, IEEE TCOM 43(12), 1995), 0–255 scale.

    RF² is the mean of the squared differences of horizontally adjacent pixels, CF² of vertically
    adjacent ones, each averaged over the differences that exist (``H·(W-1)`` and ``(H-1)·W``), as in
    Tang's ``SF_evaluation.m`` and CDDFuse. (The 2022 Tang toolbox fed [0, 1] images: ours = 255× its SF.)
    """
    return _spatial_frequency(to_gray(image))


def _spatial_frequency(gray: np.ndarray) -> float:
    _require_min_size(gray, 2, "SF", "pixel differences")
    row_frequency_sq = np.mean(np.diff(gray, axis=1) ** 2)
    column_frequency_sq = np.mean(np.diff(gray, axis=0) ** 2)
    return float(np.sqrt(row_frequency_sq + column_frequency_sq))


def average_gradient(image: np.ndarray) -> float:
    """AG = Σ sqrt((∂x² + ∂y²) / 2) / ((H-1)(W-1)), 0–255 scale (Cui et al., Opt. Commun. 341, 2015).

    Gradients are MATLAB's ``gradient`` (central differences inside, one-sided at the borders), summed
    over all ``H·W`` pixels and divided by ``(H-1)(W-1)``, exactly as Tang's ``AG_evaluation.m``.
    """
    return _average_gradient(to_gray(image))


def _average_gradient(gray: np.ndarray) -> float:
    _require_min_size(gray, 2, "AG", "pixel differences")
    grad_y, grad_x = np.gradient(gray)
    magnitude = np.sqrt((grad_x**2 + grad_y**2) / 2.0)
    height, width = gray.shape
    return float(magnitude.sum() / ((height - 1) * (width - 1)))


# --------------------------------------------------------------------------- one image against another


def mutual_information(image_a: np.ndarray, image_b: np.ndarray) -> float:
    """MI(A, B) = H(A) + H(B) − H(A, B) in bits, from the 256×256 joint histogram of grey levels.

    Qu, Zhang & Yan, Electronics Letters 38(7), 2002 (and Tang's ``Hab.m``). MI(x, x) = EN(x).
    """
    return _mutual_information(*_gray_images(("A", "B"), (image_a, image_b)))


def _mutual_information(gray_a: np.ndarray, gray_b: np.ndarray) -> float:
    levels_a, levels_b = _levels(gray_a), _levels(gray_b)
    joint = np.bincount((levels_a * HISTOGRAM_BINS + levels_b).ravel(), minlength=HISTOGRAM_BINS**2)
    joint = joint.reshape(HISTOGRAM_BINS, HISTOGRAM_BINS) / levels_a.size
    return _shannon_bits(joint.sum(axis=1)) + _shannon_bits(joint.sum(axis=0)) - _shannon_bits(joint.ravel())


def correlation(image_a: np.ndarray, image_b: np.ndarray) -> float:
    """Pearson correlation coefficient of the grey values of A and B, in [-1, 1]; NaN if one is flat."""
    gray_a, gray_b = _gray_images(("A", "B"), (image_a, image_b))
    return _corr(gray_a, gray_b)


def _corr(gray_a: np.ndarray, gray_b: np.ndarray) -> float:
    centred_a = gray_a - gray_a.mean()
    centred_b = gray_b - gray_b.mean()
    denominator = math.sqrt(float(np.sum(centred_a**2)) * float(np.sum(centred_b**2)))
    if denominator == 0.0:
        return float("nan")
    return float(np.sum(centred_a * centred_b) / denominator)


def mse(reference: np.ndarray, image: np.ndarray) -> float:
    """Mean squared error on the [0, 1] scale (0–255 values / 255), the scale TG-ECNet reports."""
    return _mse(*_gray_images(("reference", "image"), (reference, image)))


def _mse(gray_ref: np.ndarray, gray: np.ndarray) -> float:
    return float(np.mean(((gray - gray_ref) / DYNAMIC_RANGE) ** 2))


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR = 10·log10(1 / MSE) in dB with MSE on the [0, 1] scale (≡ 255² / MSE on 0–255); inf if equal."""
    return _psnr_from_mse(mse(reference, image))


def _psnr_from_mse(value: float) -> float:
    return float("inf") if value == 0.0 else float(10.0 * math.log10(1.0 / value))


def _filter_valid(image: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Separable correlation keeping only the 'valid' part (MATLAB ``filter2(..., 'valid')``)."""
    radius = (kernel_1d.size - 1) // 2
    filtered = cv2.sepFilter2D(image, cv2.CV_64F, kernel_1d, kernel_1d, borderType=cv2.BORDER_REFLECT)
    return filtered[radius : image.shape[0] - radius, radius : image.shape[1] - radius]


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    # Normalised 1-D Gaussian; its outer product equals MATLAB's fspecial('gaussian', size, sigma)
    # (the eps cut-off of fspecial removes nothing at these sizes).
    return cv2.getGaussianKernel(size, sigma, cv2.CV_64F).ravel()


_SSIM_KERNEL = _gaussian_kernel(SSIM_WINDOW, SSIM_SIGMA)


def _ssim_terms(gray_x: np.ndarray, gray_y: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term over the 'valid' window positions."""
    c1 = (SSIM_K1 * DYNAMIC_RANGE) ** 2
    c2 = (SSIM_K2 * DYNAMIC_RANGE) ** 2
    mu_x = _filter_valid(gray_x, _SSIM_KERNEL)
    mu_y = _filter_valid(gray_y, _SSIM_KERNEL)
    sigma_x_sq = _filter_valid(gray_x * gray_x, _SSIM_KERNEL) - mu_x**2
    sigma_y_sq = _filter_valid(gray_y * gray_y, _SSIM_KERNEL) - mu_y**2
    sigma_xy = _filter_valid(gray_x * gray_y, _SSIM_KERNEL) - mu_x * mu_y
    contrast_structure = (2.0 * sigma_xy + c2) / (sigma_x_sq + sigma_y_sq + c2)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return float(np.mean(luminance * contrast_structure)), float(np.mean(contrast_structure))


def ssim(image_x: np.ndarray, image_y: np.ndarray) -> float:
    """SSIM of Wang et al. 2004: mean of the SSIM map over the 'valid' 11×11 window positions.

    Gaussian window 11×11, σ = 1.5; K1 = 0.01, K2 = 0.03, L = 255 (the paper's ``ssim_index.m``;
    no automatic down-sampling). Symmetric; 1 for identical images; at most 1.
    """
    return _ssim(*_gray_images(("X", "Y"), (image_x, image_y)))


def _ssim(gray_x: np.ndarray, gray_y: np.ndarray) -> float:
    _require_min_size(gray_x, SSIM_WINDOW, "SSIM", "one 11x11 window")
    return _ssim_terms(gray_x, gray_y)[0]


def _halve(gray: np.ndarray) -> np.ndarray:
    """2×2 box filter then every second pixel, as ``imfilter(ones(2)/4, 'symmetric')`` + ``(1:2:end)``."""
    height, width = gray.shape
    padded = np.pad(gray, ((0, height % 2), (0, width % 2)), mode="edge")
    return 0.25 * (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2])


def ms_ssim_max_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales (at most 5) fit: Wang's ``msssim.m`` rule min(H, W) / 2^(scales−1) ≥ 11."""
    smaller_side = min(height, width)
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and smaller_side >= SSIM_WINDOW * 2**scales:
        scales += 1
    return scales


def ms_ssim(image_x: np.ndarray, image_y: np.ndarray, *, scales: int | None = None) -> float:
    """MS-SSIM of Wang, Simoncelli & Bovik 2003: Π_j cs_j^w_j (j < M) · ssim_M^w_M.

    Five scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); each coarser scale is the
    2×2 average of the previous one, every second pixel (Wang's ``msssim.m``). SSIM constants as
    :func:`ssim`. Five scales need a smaller side of at least 176 px. ``scales=None`` uses the most
    scales that fit (up to 5) with the first weights renormalised to sum to 1, so small images are
    still measured (``ms_ssim_max_scales`` tells how many); an explicit ``scales`` that does not fit
    raises ``ValueError``. Negative mean contrast-structure terms are clamped to 0 (as
    pytorch-msssim's ``normalize``) so that the fractional powers stay real.
    """
    gray_x, gray_y = _gray_images(("X", "Y"), (image_x, image_y))
    return _ms_ssim(gray_x, gray_y, scales)


def _ms_ssim(gray_x: np.ndarray, gray_y: np.ndarray, scales: int | None = None) -> float:
    available = ms_ssim_max_scales(*gray_x.shape)
    if scales is None:
        if available == 0:
            _require_min_size(gray_x, SSIM_WINDOW, "MS-SSIM", "one 11x11 window")
        scales = available
    elif not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ValueError(f"MS-SSIM scales must be 1..{len(MS_SSIM_WEIGHTS)}, got {scales}")
    elif scales > available:
        needed = SSIM_WINDOW * 2 ** (scales - 1)
        raise ValueError(
            f"MS-SSIM with {scales} scales needs images of at least {needed}x{needed} px; "
            f"got {gray_x.shape[1]}x{gray_x.shape[0]} (fits {available} scales)"
        )
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales], dtype=np.float64)
    if scales < len(MS_SSIM_WEIGHTS):
        # Fewer scales: renormalise the kept weights (the five standard ones sum to 1.0001 and are
        # used as published, like Wang's msssim.m).
        weights /= weights.sum()
    result = 1.0
    for level in range(scales):
        mean_ssim, mean_cs = _ssim_terms(gray_x, gray_y)
        if level == scales - 1:
            result *= max(mean_ssim, 0.0) ** weights[level]
        else:
            result *= max(mean_cs, 0.0) ** weights[level]
            gray_x, gray_y = _halve(gray_x), _halve(gray_y)
    return float(result)


def vif(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain, 4-scale VIF of ``distorted`` w.r.t. ``reference`` (Sheikh & Bovik 2006).

    LIVE's ``vifp_mscale.m``: scales with Gaussian windows of 17, 9, 5, 3 px (σ = size/5), 'valid'
    filtering and 2× subsampling between scales, HVS noise variance σ_n² = 2; VIF = Σ_scales
    Σ log10(1 + g² σ_R² / (σ_V² + σ_n²)) / Σ_scales Σ log10(1 + σ_R² / σ_n²). Not symmetric.
    Needs a smaller side of at least 41 px. NaN when the reference is constant (no information).
    """
    return _vif(*_gray_images(("reference", "distorted"), (reference, distorted)))


def _vif(gray_ref: np.ndarray, gray_dist: np.ndarray) -> float:
    _require_min_size(gray_ref, VIF_MIN_SIZE, "VIF", "four scales with 17/9/5/3-px windows")
    numerator = 0.0
    denominator = 0.0
    for scale, size in enumerate(VIF_WINDOWS):
        kernel = _gaussian_kernel(size, size / 5.0)
        if scale > 0:
            gray_ref = _filter_valid(gray_ref, kernel)[::2, ::2]
            gray_dist = _filter_valid(gray_dist, kernel)[::2, ::2]
        mu_ref = _filter_valid(gray_ref, kernel)
        mu_dist = _filter_valid(gray_dist, kernel)
        sigma_ref_sq = np.maximum(_filter_valid(gray_ref * gray_ref, kernel) - mu_ref**2, 0.0)
        sigma_dist_sq = np.maximum(_filter_valid(gray_dist * gray_dist, kernel) - mu_dist**2, 0.0)
        sigma_cross = _filter_valid(gray_ref * gray_dist, kernel) - mu_ref * mu_dist

        gain = sigma_cross / (sigma_ref_sq + _VIF_EPS)
        noise_sq = sigma_dist_sq - gain * sigma_cross
        # The special cases of vifp_mscale.m, in its order: flat reference, flat distorted, negative gain.
        flat_ref = sigma_ref_sq < _VIF_EPS
        gain[flat_ref] = 0.0
        noise_sq[flat_ref] = sigma_dist_sq[flat_ref]
        sigma_ref_sq[flat_ref] = 0.0
        flat_dist = sigma_dist_sq < _VIF_EPS
        gain[flat_dist] = 0.0
        noise_sq[flat_dist] = 0.0
        negative = gain < 0.0
        noise_sq[negative] = sigma_dist_sq[negative]
        gain[negative] = 0.0
        noise_sq = np.maximum(noise_sq, _VIF_EPS)

        numerator += float(np.sum(np.log10(1.0 + gain**2 * sigma_ref_sq / (noise_sq + VIF_SIGMA_NSQ))))
        denominator += float(np.sum(np.log10(1.0 + sigma_ref_sq / VIF_SIGMA_NSQ)))
    return numerator / denominator if denominator > 0.0 else float("nan")


# --------------------------------------------------------------------------- two-source metrics


def scd(source_a: np.ndarray, source_b: np.ndarray, fused: np.ndarray) -> float:
    """SCD = corr(F − B, A) + corr(F − A, B) (Aslantas & Bendes, AEU 69(12), 2015), range [-2, 2]."""
    return _scd(*_gray_images(("A", "B", "fused"), (source_a, source_b, fused)))


def _scd(gray_a: np.ndarray, gray_b: np.ndarray, gray_f: np.ndarray) -> float:
    return _corr(gray_f - gray_b, gray_a) + _corr(gray_f - gray_a, gray_b)


_SOBEL_SMOOTH = np.array([1.0, 2.0, 1.0])
_SOBEL_DERIVATIVE = np.array([-1.0, 0.0, 1.0])


def _sobel(gray: np.ndarray, border: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical Sobel responses (correlation, same size), multiplied by ``scale``."""
    along_x = cv2.sepFilter2D(gray, cv2.CV_64F, _SOBEL_DERIVATIVE * scale, _SOBEL_SMOOTH, borderType=border)
    along_y = cv2.sepFilter2D(gray, cv2.CV_64F, _SOBEL_SMOOTH * scale, _SOBEL_DERIVATIVE, borderType=border)
    return along_x, along_y


def _relative_strength(g_source: np.ndarray, g_fused: np.ndarray) -> np.ndarray:
    """min(g_S, g_F) / max(g_S, g_F) per pixel; 0 where both are 0."""
    larger = np.maximum(g_source, g_fused)
    smaller = np.minimum(g_source, g_fused)
    return np.divide(smaller, larger, out=np.zeros_like(larger), where=larger > 0)


def _atan_ratio(numerator: np.ndarray, denominator: np.ndarray, zero_denominator: np.ndarray) -> np.ndarray:
    """atan(numerator / denominator) in (-π/2, π/2], ``zero_denominator`` where denominator = 0."""
    ratio = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)
    return np.where(denominator != 0, np.arctan(ratio), zero_denominator)


def q_abf(source_a: np.ndarray, source_b: np.ndarray, fused: np.ndarray) -> float:
    """Q^AB/F of Xydeas & Petrović (Electronics Letters 36(4), 2000): edge information transfer, 0–1.

    Sobel edge strength g and orientation α = atan(s_y / s_x) (π/2 where s_x = 0) per pixel, zero
    padding at the border (MATLAB ``conv2(..., 'same')`` as in the common ``analysis_Qabf.m``);
    G^AF = min(g_A, g_F)/max(g_A, g_F) (1 where both equal and non-zero), A^AF = 1 − |α_A − α_F|/(π/2);
    Q^AF = Tg/(1+e^{kg(G−Dg)}) · Ta/(1+e^{ka(A−Da)}) with Tg = 0.9994, kg = −15, Dg = 0.5,
    Ta = 0.9879, ka = −22, Da = 0.8; Q = Σ(Q^AF g_A^L + Q^BF g_B^L) / Σ(g_A^L + g_B^L), L = 1.
    Symmetric in A and B. The largest value (F = A = B) is Q^AF(G=1, A=1) ≈ 0.9748. NaN if both
    sources are flat. (The reference code sets G = g_F where g_A = g_F; see docs/metrics.md.)
    """
    return _q_abf(*_gray_images(("A", "B", "fused"), (source_a, source_b, fused)))


def _q_abf(gray_a: np.ndarray, gray_b: np.ndarray, gray_f: np.ndarray) -> float:
    edges = []
    for gray in (gray_a, gray_b, gray_f):
        s_x, s_y = _sobel(gray, cv2.BORDER_CONSTANT, 1.0)
        # analysis_Qabf.m convolves (conv2) with h3 = [-1 0 1; ...], i.e. correlates with its mirror,
        # so its s_x has the opposite sign. That flips every α except the fixed π/2 where s_x = 0, and
        # so changes |α_A − α_F| next to such pixels: follow the reference's sign.
        s_x = -s_x
        edges.append((np.hypot(s_x, s_y), _atan_ratio(s_y, s_x, np.full_like(s_x, np.pi / 2))))
    (g_a, alpha_a), (g_b, alpha_b), (g_f, alpha_f) = edges

    def preservation(g_s: np.ndarray, alpha_s: np.ndarray) -> np.ndarray:
        strength = _relative_strength(g_s, g_f)
        orientation = 1.0 - np.abs(alpha_s - alpha_f) / (np.pi / 2)
        q_g = QABF_TG / (1.0 + np.exp(QABF_KG * (strength - QABF_DG)))
        q_a = QABF_TA / (1.0 + np.exp(QABF_KA * (orientation - QABF_DA)))
        return q_g * q_a

    weight_a, weight_b = g_a**QABF_L, g_b**QABF_L
    denominator = float(np.sum(weight_a + weight_b))
    if denominator == 0.0:
        return float("nan")
    numerator = float(np.sum(preservation(g_a, alpha_a) * weight_a + preservation(g_b, alpha_b) * weight_b))
    return numerator / denominator


def n_abf(source_a: np.ndarray, source_b: np.ndarray, fused: np.ndarray, *, peak: float = 255.0) -> float:
    """N_abf: fusion artifacts, Shreyamsha Kumar's modification of Petrović's N^AB/F, 0–1 (lower better).

    B. K. Shreyamsha Kumar, "Multifocus and multispectral image fusion based on pixel significance
    using discrete cosine harmonic wavelet transform", SIViP 7, 2013; his ``objective_fusion_perform_fn.m``
    (``analysis_nabf.m`` in Tang's toolbox). Sobel kernels / 8 with reflect-101 border; g = |∇|,
    α = atan(g_v / g_h) (0 where both are 0); G^SF = min/max of strengths (0 if either is 0);
    A^SF = | |α_S − α_F| − π/2 | · 2/π; Q^SF = sqrt(Nrg/(1+e^{−kg(G−σg)}) · Nra/(1+e^{−ka(A−σa)}))
    with Nrg = 0.9999, kg = 19, σg = 0.5, Nra = 0.9995, ka = 22, σa = 0.5; weights w_S = g_S^Lg
    (Lg = 1.5) where g_S ≥ Td = 2, else wt_min = 0.001; artifact pixels are those where g_F exceeds
    both g_A and g_B: N = Σ_art ((1−Q^AF) w_A + (1−Q^BF) w_B) / Σ (w_A + w_B).

    The weights depend on the intensity scale (Td and g^1.5); ``peak`` is the white level the formula
    sees. ``peak = 255`` (default): Kumar's own 8-bit usage, also the scale of the current Tang
    toolbox (2023+; it passes its arguments in the wrong order, see docs/metrics.md) and of the
    IVIF_ZOO Python port. ``peak = 1``: the 2022 Tang toolbox, which passed ``im2double`` images;
    there g never reaches Td, every weight is wt_min and N_abf is the plain mean artifact loss (larger
    values). Gradients are taken on the 0–255 grey values and then scaled, so which pixels count as
    artifacts (g_F > g_A, g_B) never depends on floating-point round-off. Symmetric in A and B;
    0 when F = A = B.
    """
    grays = _gray_images(("A", "B", "fused"), (source_a, source_b, fused))
    return _n_abf(*grays, peak=peak)


def _n_abf(gray_a: np.ndarray, gray_b: np.ndarray, gray_f: np.ndarray, peak: float = 255.0) -> float:
    if not peak > 0:
        raise ValueError(f"N_abf peak must be positive, got {peak}")
    edges = []
    for gray in (gray_a, gray_b, gray_f):
        # Kumar's sobel_fn: gv = response to [-1 0 1; -2 0 2; -1 0 1]/8 (along x), gh = along y;
        # α = atan(gv / gh), which MATLAB evaluates to ±π/2 for gh = 0 and which is 0 where both are 0.
        g_v, g_h = _sobel(gray, cv2.BORDER_REFLECT_101, 1.0 / 8.0)
        edges.append((np.hypot(g_v, g_h), _atan_ratio(g_v, g_h, np.sign(g_v) * (np.pi / 2))))
    (g_a, alpha_a), (g_b, alpha_b), (g_f, alpha_f) = edges

    def preservation(g_s: np.ndarray, alpha_s: np.ndarray) -> np.ndarray:
        strength = _relative_strength(g_s, g_f)  # 0 where either is 0, as in Kumar's code
        orientation = np.abs(np.abs(alpha_s - alpha_f) - np.pi / 2) * 2.0 / np.pi
        q_g = NABF_NRG / (1.0 + np.exp(-NABF_KG * (strength - NABF_SIGMAG)))
        q_a = NABF_NRA / (1.0 + np.exp(-NABF_KA * (orientation - NABF_SIGMAA)))
        return np.sqrt(q_g * q_a)

    def weight(g_s: np.ndarray) -> np.ndarray:
        g_scaled = g_s * (peak / DYNAMIC_RANGE)
        return np.where(g_scaled >= NABF_TD, g_scaled**NABF_LG, NABF_WT_MIN)

    weight_a, weight_b = weight(g_a), weight(g_b)
    artifacts = (g_f > g_a) & (g_f > g_b)
    loss = (1.0 - preservation(g_a, alpha_a)) * weight_a + (1.0 - preservation(g_b, alpha_b)) * weight_b
    return float(np.sum(loss[artifacts]) / np.sum(weight_a + weight_b))


def mutual_information_fusion(source_a: np.ndarray, source_b: np.ndarray, fused: np.ndarray) -> float:
    """MI of the fusion literature: MI(F, A) + MI(F, B), bits (Qu et al. 2002)."""
    return _mutual_information_fusion(*_gray_images(("A", "B", "fused"), (source_a, source_b, fused)))


def _mutual_information_fusion(gray_a: np.ndarray, gray_b: np.ndarray, gray_f: np.ndarray) -> float:
    return _mutual_information(gray_f, gray_a) + _mutual_information(gray_f, gray_b)


def vif_fusion(source_a: np.ndarray, source_b: np.ndarray, fused: np.ndarray) -> float:
    """VIF of the fusion literature: VIF(A, F) + VIF(B, F), the sum of the pixel-domain VIFs.

    This is what the published "VIF"/"VIFF" columns of SeAFusion, CDDFuse and most IVIF papers hold
    (Tang's ``vifp_mscale(ir, f) + vifp_mscale(vis, f)``, CDDFuse's ``Evaluator.VIFF``), not Han et
    al.'s 2013 VIFF; see docs/metrics.md.
    """
    return _vif_fusion(*_gray_images(("A", "B", "fused"), (source_a, source_b, fused)))


def _vif_fusion(gray_a: np.ndarray, gray_b: np.ndarray, gray_f: np.ndarray) -> float:
    return _vif(gray_a, gray_f) + _vif(gray_b, gray_f)


# --------------------------------------------------------------------------- all metrics at once


def _mean_over_sources(measure: Callable[[np.ndarray, np.ndarray], float]) -> _SourceMetric:
    def two_source(gray_a: np.ndarray, gray_b: np.ndarray, gray_f: np.ndarray) -> float:
        return 0.5 * (measure(gray_a, gray_f) + measure(gray_b, gray_f))

    return two_source


def _psnr_fusion(gray_a: np.ndarray, gray_b: np.ndarray, gray_f: np.ndarray) -> float:
    return _psnr_from_mse(0.5 * (_mse(gray_a, gray_f) + _mse(gray_b, gray_f)))


_SOURCE_METRICS: dict[str, _SourceMetric] = {
    "MI": _mutual_information_fusion,
    "SCD": _scd,
    "VIF": _vif_fusion,
    "Q_abf": _q_abf,
    "N_abf": _n_abf,
    "SSIM": _mean_over_sources(_ssim),
    "MS-SSIM": _mean_over_sources(_ms_ssim),
    "CC": _mean_over_sources(_corr),
    "MSE": _mean_over_sources(_mse),
    "PSNR": _psnr_fusion,
}
_IMAGE_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "EN": _entropy,
    "SD": _standard_deviation,
    "SF": _spatial_frequency,
    "AG": _average_gradient,
}


def fusion_metrics(
    ir: np.ndarray,
    vi: np.ndarray,
    fused: np.ndarray,
    *,
    clean_ir: np.ndarray | None = None,
    clean_vi: np.ndarray | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, float]:
    """Every metric of :data:`METRICS` (or those in ``names``) for one fused image, in METRICS order.

    ``ir``, ``vi``: the fusion inputs; ``fused``: the result; ``clean_ir``/``clean_vi``: the clean
    sources the inputs were degraded from. Images: ``(H, W)`` or ``(H, W, 3)`` RGB, uint8/uint16
    or float in [0, 1], all the same height and width (see :func:`to_gray`). Image-only metrics
    use ``fused``; source metrics use A = clean IR (else ``ir``) and B = clean visible (else ``vi``),
    each replaced independently. Raises ``ValueError`` for an unknown metric name, a bad image or
    differing sizes. Values are plain floats; NaN where a metric is undefined: a flat source (VIF,
    CC, SCD, Q_abf) or images smaller than the metric's ``METRICS[name].min_side`` (VIF needs 41 px,
    SSIM and MS-SSIM 11 px), so that one small image does not stop a whole evaluation.
    """
    selected = set(METRICS) if names is None else set(names)
    unknown = sorted(selected - METRICS.keys())
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")
    labels = ("ir", "vi", "fused", "clean_ir", "clean_vi")
    images = (ir, vi, fused, clean_ir, clean_vi)
    given = [(label, image) for label, image in zip(labels, images) if image is not None]
    grays = dict(zip((label for label, _ in given), _gray_images(*zip(*given))))
    gray_f = grays["fused"]
    gray_a = grays.get("clean_ir", grays["ir"])
    gray_b = grays.get("clean_vi", grays["vi"])
    results: dict[str, float] = {}
    for name in METRICS:
        if name not in selected:
            continue
        if min(gray_f.shape) < METRICS[name].min_side:
            results[name] = float("nan")
        elif name in _IMAGE_METRICS:
            results[name] = float(_IMAGE_METRICS[name](gray_f))
        else:
            results[name] = float(_SOURCE_METRICS[name](gray_a, gray_b, gray_f))
    return results
