"""Training losses of the two stages (pure functions on ``(B, C, H, W)`` tensors in [0, 1]).

Stage 1 (restoration, TG-ECNet Eq. L_res): L1 of each restored image to its clean source, L1 of
their Sobel gradients, the gates' balancing loss and the degradation-label loss (presence BCE +
severity L1). Stage 2 (fusion): max-intensity L1, Sobel-gradient-max L1 (as in SeAFusion/TG-ECNet),
SSIM to both clean sources, fidelity (L1 + L2) to both clean sources, which keeps the fused
image close to both references (the PSNR/CC/MS-SSIM of the evaluation are averaged over them),
Pearson correlation to both, the edge overshoot above the stronger source, edge information transfer
(the evaluation's Q_abf) and information fidelity (its VIF), both made differentiable. Each stage-2 term
``name`` is weighted by ``LossWeights.fusion_<name>``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mex_fusion_ros.eval.metrics import (
    QABF_DA,
    QABF_DG,
    QABF_KA,
    QABF_KG,
    QABF_TA,
    QABF_TG,
    VIF_MIN_SIZE,
    VIF_SIGMA_NSQ,
    VIF_WINDOWS,
)
from mex_fusion_ros.model.layers import rgb_to_luminance

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|G_x| + |G_y|`` of every channel: ``(B, C, H, W) -> (B, C, H, W)`` (replicate padding)."""
    channels = x.shape[1]
    kernel_x = _SOBEL_X.to(device=x.device, dtype=x.dtype)
    kernels = torch.stack((kernel_x, kernel_x.t())).unsqueeze(1).repeat(channels, 1, 1, 1)  # (2C, 1, 3, 3)
    gradients = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=channels)
    return gradients.abs().view(x.shape[0], channels, 2, *x.shape[-2:]).sum(2)


def _gaussian_kernel(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of ``(B, C, H, W)`` with a 1-D ``kernel`` (K,) -> ``(B, C, H-K+1, W-K+1)``."""
    channels, size = x.shape[1], kernel.numel()
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, size, 1), groups=channels)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004, Gaussian window, data range 1) of ``(B, C, H, W)`` images -> scalar.

    The window shrinks to the image for inputs smaller than ``window`` ("valid" filtering, no padding).
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    window = min(window, x.shape[-1], x.shape[-2])
    g = _gaussian_kernel(window, sigma, x)
    c1, c2 = 0.01**2, 0.03**2
    # The five local statistics in one separable (row then column) depthwise filtering pass.
    stack = _filter_valid(torch.cat((x, y, x * x, y * y, x * y), dim=1), g)
    mu_x, mu_y, xx, yy, xy = stack.chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean()


@dataclass(frozen=True)
class LossWeights:
    """Weights of every loss term (YAML section ``loss`` of the training configuration)."""

    # stage 1
    restoration_l1: float = 1.0
    restoration_gradient: float = 0.5
    degradation_presence: float = 0.2
    degradation_severity: float = 0.1
    # stage 2
    fusion_intensity: float = 0.02
    fusion_gradient: float = 0.1
    fusion_ssim: float = 0.25
    fusion_fidelity_l1: float = 1.0
    fusion_fidelity_l2: float = 16.0
    #: 1 - mean Pearson correlation of the fused luminance with each clean source (per image): the
    #: evaluation's CC. Unlike the L2 fidelity, it ignores brightness and contrast offsets, so it
    #: rewards keeping both sources' structure rather than their mean grey level.
    fusion_correlation: float = 0.0
    #: Mean Sobel strength of the fused luminance above the stronger clean source: edges neither source
    #: has (ringing, sharpening halos, amplified noise), the pixels the evaluation's N_abf counts.
    #: The gradient term penalises those too, but symmetrically, so it also pushes weak edges up.
    fusion_overshoot: float = 0.0
    #: 1 - edge information transfer (``edge_transfer``, the evaluation's Q_abf made differentiable):
    #: each clean source's edges kept at their own strength and orientation.
    fusion_edge_transfer: float = 0.0
    #: 1 - half the evaluation's VIF (``information_fidelity`` to each clean source, summed): how much of
    #: each source's local contrast information the fused image keeps. Computed on crops of at least
    #: 41 px (the four VIF scales).
    fusion_information: float = 0.0
    # both
    balance: float = 0.01


def degradation_loss(logits: torch.Tensor, severity: torch.Tensor, present: torch.Tensor,
                     label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Presence BCE (logits ``(B, T)`` vs 0/1 ``present``) and severity L1 (``(B, T)`` vs ``label``)."""
    return (F.binary_cross_entropy_with_logits(logits, present.float()),
            F.l1_loss(severity, label.float()))


def restoration_losses(restored_ir: torch.Tensor, restored_vi: torch.Tensor, clean_ir: torch.Tensor,
                       clean_vi: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stage-1 image terms: ``l1`` (sum over modalities) and ``gradient`` (Sobel L1, sum)."""
    l1 = F.l1_loss(restored_ir, clean_ir) + F.l1_loss(restored_vi, clean_vi)
    gradient = (F.l1_loss(sobel_magnitude(restored_ir), sobel_magnitude(clean_ir))
                + F.l1_loss(sobel_magnitude(restored_vi), sobel_magnitude(clean_vi)))
    return {"l1": l1, "gradient": gradient}


def image_correlation(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation per image of ``(B, C, H, W)`` tensors -> ``(B,)`` (0 for a flat image)."""
    x = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    y = y.flatten(1) - y.flatten(1).mean(1, keepdim=True)
    return (x * y).sum(1) / torch.sqrt((x * x).sum(1) * (y * y).sum(1) + eps)


def _sobel_xy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel responses along x and y of ``(B, 1, H, W)`` (zero padding, as the metric)."""
    kernel_x = _SOBEL_X.to(device=x.device, dtype=x.dtype)
    kernels = torch.stack((kernel_x, kernel_x.t())).unsqueeze(1)  # (2, 1, 3, 3)
    gradients = F.conv2d(x, kernels, padding=1)
    return gradients[:, :1], gradients[:, 1:]


def edge_transfer(fused: torch.Tensor, source_a: torch.Tensor, source_b: torch.Tensor,
                  eps: float = 1e-6) -> torch.Tensor:
    """Differentiable edge information transfer Q^AB/F (Xydeas and Petrovic 2000) per image.

    ``(B, 1, H, W)`` luminances -> ``(B,)`` in [0, ~0.975]. As the evaluation's ``Q_abf``: at every
    pixel each source's Sobel edge is compared with the fused one in relative strength
    ``min(g_S, g_F) / max(g_S, g_F)`` and orientation, both passed through the metric's sigmoids, and
    averaged with the source's edge strength as weight. Two smooth stand-ins keep gradients finite:
    ``g = sqrt(s_x^2 + s_y^2 + eps)`` and the orientation difference is the angle between the two
    edge lines (``acos |cos|``), not the metric's ``|atan(s_y/s_x) - ...|``, which jumps where
    ``s_x`` changes sign. It rewards each source's edges at their own strength: weaker (averaged)
    edges and overshoot (halos, amplified noise) both lower it.
    """
    edges = [_sobel_xy(image) for image in (source_a, source_b, fused)]
    strengths = [torch.sqrt(sx * sx + sy * sy + eps) for sx, sy in edges]
    (fx, fy), g_f = edges[2], strengths[2]
    numerator = fused.new_zeros(fused.shape[0])
    denominator = fused.new_zeros(fused.shape[0])
    for (sx, sy), g_s in zip(edges[:2], strengths[:2]):
        relative = torch.minimum(g_s, g_f) / torch.maximum(g_s, g_f)
        cosine = ((sx * fx + sy * fy).abs() / (g_s * g_f)).clamp(0.0, 1.0 - 1e-6)
        orientation = 1.0 - torch.acos(cosine) / (math.pi / 2)
        # The metric's 1 / (1 + exp(k (x - d))) with its negative slopes k is sigmoid(-k (x - d)).
        preserved = (QABF_TG * torch.sigmoid(-QABF_KG * (relative - QABF_DG))
                     * QABF_TA * torch.sigmoid(-QABF_KA * (orientation - QABF_DA)))
        numerator = numerator + (preserved * g_s).flatten(1).sum(1)
        denominator = denominator + g_s.flatten(1).sum(1)
    return numerator / denominator


def information_fidelity(reference: torch.Tensor, distorted: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Differentiable pixel-domain VIF (Sheikh and Bovik 2006) of ``distorted`` w.r.t. ``reference``.

    ``(B, 1, H, W)`` in [0, 1] (H, W >= 41) -> ``(B,)``. The evaluation's ``vif`` (four scales, Gaussian
    windows of 17/9/5/3 px, 'valid' filtering, 2x subsampling, noise variance 2 on the 0-255 scale)
    with its special cases made smooth: a negative local gain counts as zero (``relu``) and the
    variances get ``eps`` (0-255 scale), so flat windows have finite gradients. It is the share of the
    reference's local information that survives in ``distorted``: a weaker (averaged) local contrast
    lowers it, residual noise lowers it, and a stronger contrast raises it, so it is held in check
    by the SSIM and fidelity terms, which penalise contrast beyond the sources'.
    """
    reference = reference * 255.0
    distorted = distorted * 255.0
    numerator = reference.new_zeros(reference.shape[0])
    denominator = reference.new_zeros(reference.shape[0])
    for scale, size in enumerate(VIF_WINDOWS):
        kernel = _gaussian_kernel(size, size / 5.0, reference)
        if scale > 0:
            reference = _filter_valid(reference, kernel)[..., ::2, ::2]
            distorted = _filter_valid(distorted, kernel)[..., ::2, ::2]
        stats = _filter_valid(torch.cat((reference, distorted, reference * reference, distorted * distorted,
                                         reference * distorted), dim=1), kernel)
        mu_ref, mu_dist, ref_sq, dist_sq, cross = stats.chunk(5, dim=1)
        variance_ref = (ref_sq - mu_ref * mu_ref).clamp_min(0.0)
        variance_dist = (dist_sq - mu_dist * mu_dist).clamp_min(0.0)
        covariance = cross - mu_ref * mu_dist
        gain = covariance.clamp_min(0.0) / (variance_ref + eps)
        noise = (variance_dist - gain * covariance).clamp_min(0.0)
        numerator = numerator + torch.log10(
            1.0 + gain * gain * variance_ref / (noise + VIF_SIGMA_NSQ)).flatten(1).sum(1)
        denominator = denominator + torch.log10(1.0 + variance_ref / VIF_SIGMA_NSQ).flatten(1).sum(1)
    return numerator / denominator.clamp_min(eps)


#: Every stage-2 term, in train.csv order; ``LossWeights.fusion_<name>`` weights term ``name``.
FUSION_TERMS = ("intensity", "gradient", "ssim", "fidelity_l1", "fidelity_l2", "correlation", "overshoot",
                "edge_transfer", "information")


def fusion_losses(fused_luminance: torch.Tensor, clean_ir: torch.Tensor, clean_vi: torch.Tensor,
                  terms: Collection[str] = FUSION_TERMS) -> dict[str, torch.Tensor]:
    """Stage-2 terms for the fused luminance ``(B, 1, H, W)`` against the clean IR ``(B, 1, H, W)``
    and the luminance of the clean visible ``(B, 3, H, W)``.

    Only the named ``terms`` are computed (training asks for those with a non-zero weight: the
    information term alone costs about a third of a fusion step). ``information`` is left out on crops
    smaller than its four scales need (``VIF_MIN_SIZE``).
    """
    unknown = sorted(set(terms) - set(FUSION_TERMS))
    if unknown:
        raise ValueError(f"unknown fusion loss terms {unknown}; known: {', '.join(FUSION_TERMS)}")
    wanted = set(terms)
    if min(fused_luminance.shape[-2:]) < VIF_MIN_SIZE:
        wanted.discard("information")
    luminance = rgb_to_luminance(clean_vi)
    if wanted & {"gradient", "overshoot"}:  # both compare the same two edge maps
        fused_edges = sobel_magnitude(fused_luminance)
        source_edges = torch.maximum(sobel_magnitude(clean_ir), sobel_magnitude(luminance))

    builders: dict[str, Callable[[], torch.Tensor]] = {
        "intensity": lambda: F.l1_loss(fused_luminance, torch.maximum(clean_ir, luminance)),
        "gradient": lambda: F.l1_loss(fused_edges, source_edges),
        "ssim": lambda: 1.0 - 0.5 * (ssim(fused_luminance, clean_ir) + ssim(fused_luminance, luminance)),
        "fidelity_l1": lambda: 0.5 * (F.l1_loss(fused_luminance, clean_ir) + F.l1_loss(fused_luminance, luminance)),
        "fidelity_l2": lambda: 0.5 * (F.mse_loss(fused_luminance, clean_ir)
                                      + F.mse_loss(fused_luminance, luminance)),
        "correlation": lambda: 1.0 - 0.5 * (image_correlation(fused_luminance, clean_ir)
                                            + image_correlation(fused_luminance, luminance)).mean(),
        "overshoot": lambda: F.relu(fused_edges - source_edges).mean(),
        "edge_transfer": lambda: 1.0 - edge_transfer(fused_luminance, clean_ir, luminance).mean(),
        "information": lambda: 1.0 - 0.5 * (information_fidelity(clean_ir, fused_luminance)
                                            + information_fidelity(luminance, fused_luminance)).mean(),
    }
    return {name: builders[name]() for name in FUSION_TERMS if name in wanted}
