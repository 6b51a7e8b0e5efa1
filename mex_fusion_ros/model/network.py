"""MexFusionNet: shared U-shaped encoder/decoder with degradation-aware and fusion-aware gated MoE.

Data flow for a batch of ``B`` pairs (``IR (B, 1, H, W)``, visible ``(B, 3, H, W)``, both in [0, 1])::

    IR --stem_ir--\\                          /--> restoration decoder (shared) --> restored IR, VI
                   >-- degradation estimator -- task prompt, presence logits, severities
    VI --stem_vi--/          |                                              |
         both modalities as one 2B batch through the SHARED encoder:       |
         level l: [gated MoE(prompt) if l in moe_levels] -> blocks -> down |
                                                                            v
    per level: F_M = alpha_l * F_V + beta_l * F_I  --> fusion-aware gated MoE (bottleneck)
               --> fusion decoder --> [gated MoE at full resolution] --> head
    fused Y = full-resolution Laplacian-pyramid blend of restored IR and Y(restored VI), its
              per-level weights and gains predicted by the head ("pyramid", model.pyramid);
              or w * restored IR + (1 - w) * Y(restored VI) + delta ("blend", older weights)
    fused RGB = YCbCr->RGB(fused Y, CbCr of restored VI)

Inputs of any size are padded (reflect) to a multiple of ``config.stride`` and outputs cropped back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mex_fusion_ros.model.config import ModelConfig
from mex_fusion_ros.model.layers import (
    Downsample,
    Upsample,
    make_blocks,
    replace_luminance,
    rgb_to_luminance,
)
from mex_fusion_ros.model.moe import SparseMoE
from mex_fusion_ros.model.pyramid import PyramidFusion, pyramid_down


@dataclass
class GateDecision:
    """Experts one gate chose for a batch: ``indices``/``weights`` ``(B, k)``, rows = pairs."""

    gate: str
    indices: torch.Tensor
    weights: torch.Tensor


@dataclass
class DegradationOutput:
    """Per pair: presence logits ``(B, T)``, severities ``(B, T)`` in [0, 1], task prompt ``(B, P)``."""

    logits: torch.Tensor
    severity: torch.Tensor
    prompt: torch.Tensor

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.sigmoid()

    def condition(self) -> torch.Tensor:
        """Gate conditioning vector ``(B, 2T + P)``: presence probabilities, severities, prompt."""
        return torch.cat((self.probabilities, self.severity, self.prompt), dim=1)


@dataclass
class EncodedPair:
    """Shared-encoder features of both modalities (``forward_features``)."""

    #: Per level (finest first, bottleneck last) ``(B, C_l, H_l, W_l)``.
    ir_levels: list[torch.Tensor]
    vi_levels: list[torch.Tensor]
    degradation: DegradationOutput
    routing: list[GateDecision] = field(default_factory=list)
    balance_loss: torch.Tensor | None = None


@dataclass
class ModelOutput:
    """Everything one forward pass produces; image tensors are cropped to the input size and not
    clipped (clip to [0, 1] for display; losses see the raw values)."""

    #: ``(B, 1, H, W)`` restored infrared and ``(B, 3, H, W)`` restored visible.
    restored_ir: torch.Tensor
    restored_vi: torch.Tensor
    #: ``(B, T)`` presence logits and ``(B, T)`` severities in ``config.degradation_types`` order.
    degradation_logits: torch.Tensor
    degradation_severity: torch.Tensor
    routing: list[GateDecision]
    #: Sum of the balancing losses (``cv^2`` importance + load) of every gate, and of the encoder's
    #: (degradation-aware) gates alone.
    balance_loss: torch.Tensor
    encoder_balance_loss: torch.Tensor
    #: ``(B, 3, H, W)`` RGB fused image (fused luminance, chroma of the restored visible) and
    #: ``(B, 1, H, W)`` fused luminance (the grey output); None when called with ``fuse=False``.
    fused: torch.Tensor | None = None
    fused_luminance: torch.Tensor | None = None


#: Number of values :func:`image_statistics` returns per image.
NUM_IMAGE_STATISTICS = 8


def lower_median(values: torch.Tensor) -> torch.Tensor:
    """Row medians of ``(B, N)`` -> ``(B,)``, the lower middle value for even N (``torch.median``'s).

    On the CPU, outside tracing/export and autograd, NumPy's introselect gives the identical value
    about 15x faster than ``torch.median`` (4.0 vs 0.25 ms for the 326 k values of a 640x512 image
    on one thread; four calls per forward were about 15 % of ``nano``'s CPU time).
    """
    exportable = (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                  or torch.compiler.is_compiling() or torch.compiler.is_exporting())
    if exportable or values.device.type != "cpu" or values.requires_grad or values.dtype != torch.float32:
        return values.median(dim=1).values
    middle = (values.shape[1] - 1) // 2
    array = np.partition(values.detach().numpy(), middle, axis=1)[:, middle]
    return torch.from_numpy(np.ascontiguousarray(array))


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2x2 average of ``(B, C, H, W)`` -> ``(B, C, H // 2, W // 2)`` (an odd last row/column is
    dropped, as ``F.avg_pool2d(x, 2)`` does)."""
    height, width = x.shape[-2:]
    return pyramid_down(x[..., : height - height % 2, : width - width % 2])


def _mean_abs_differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean absolute horizontal and vertical neighbour differences of ``(B, 1, H, W)`` -> two ``(B,)``."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return dx, dy


def image_statistics(image: torch.Tensor) -> torch.Tensor:
    """Size-independent degradation cues of ``(B, C, H, W)`` images in [0, 1] -> ``(B, 8)``.

    On the channel mean: log of the robust noise level (median absolute diagonal difference,
    Donoho's MAD estimator, insensitive to edges), log mean absolute horizontal and vertical
    differences (column stripes raise the horizontal one), log gradient energy after 2x and 4x
    average pooling and the fine-to-coarse ratio (defocus lowers fine-scale gradients relative to
    coarse ones), mean and standard deviation (haze, exposure). Needs H, W >= 8.

    These run on every full-resolution frame, so they are written for one CPU thread: the channel
    mean as a sum of channel slices (a reduction over the channel axis of a channels-last image is
    2x slower), the diagonal difference as the horizontal difference of the vertical one (reused
    for the vertical energy), and the 4x pooling as the 2x pooling done twice.
    """
    image = image.float()
    channels = image.shape[1]
    if channels == 1:
        grey = image.contiguous()
    else:
        total = image[:, 0:1]
        for channel in range(1, channels):
            total = total + image[:, channel:channel + 1]
        grey = (total / channels).contiguous()
    eps = 1e-4
    vertical = grey[..., 1:, :] - grey[..., :-1, :]
    diagonal = vertical[..., :, 1:] - vertical[..., :, :-1]
    noise = lower_median(diagonal.abs().flatten(1)) / (2 * 0.6745)
    dx = (grey[..., :, 1:] - grey[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    dy = vertical.abs().mean(dim=(1, 2, 3))
    half = _halve(grey)
    dx2, dy2 = _mean_abs_differences(half)
    dx4, dy4 = _mean_abs_differences(_halve(half))
    coarse = torch.log(dx4 + dy4 + eps)
    flat = grey.flatten(1)
    values = [torch.log(noise + eps), torch.log(dx + eps), torch.log(dy + eps), torch.log(dx2 + dy2 + eps),
              coarse, torch.log(dx + dy + eps) - coarse, flat.mean(1), flat.std(1)]
    return torch.stack(values, dim=1).to(image.dtype)


class DegradationEstimator(nn.Module):
    """Task prompt from pooled features of both stems (TG-ECNet's degradation-aware prompt, here
    supervised with the synthesis labels).

    A patchify conv (stride 4) and two stride-2 convs summarise each modality; mean and standard
    deviation pooling (texture/noise statistics that do not depend on the image size) of IR and
    visible are concatenated and mapped to the prompt, from which presence logits and severities
    are read.
    """

    def __init__(self, in_channels: int, width: int, num_types: int, patch: int = 4,
                 statistics: bool = False) -> None:
        super().__init__()
        self.statistics = statistics
        extra = 2 * NUM_IMAGE_STATISTICS if statistics else 0
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, patch, stride=patch), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
        )
        self.to_prompt = nn.Sequential(nn.Linear(4 * width + extra, 2 * width), nn.GELU(),
                                       nn.Linear(2 * width, width), nn.GELU())
        self.presence = nn.Linear(width, num_types)
        self.severity = nn.Linear(width, num_types)

    def forward(self, stem_ir: torch.Tensor, stem_vi: torch.Tensor, ir: torch.Tensor | None = None,
                vi: torch.Tensor | None = None) -> DegradationOutput:
        """``stem_ir``, ``stem_vi``: ``(B, C0, h, w)`` stem features; ``ir`` ``(B, 1, H, W)`` and ``vi``
        ``(B, 3, H, W)`` the (padded) input images, needed when built with ``statistics=True``."""
        batch = stem_ir.shape[0]
        features = self.features(torch.cat((stem_ir, stem_vi), dim=0)).flatten(2)
        stats = torch.cat((features.mean(-1), features.std(-1, unbiased=False)), dim=1)
        stats = torch.cat((stats[:batch], stats[batch:]), dim=1)  # (B, [IR stats, VI stats])
        if self.statistics:
            if ir is None or vi is None:
                raise ValueError("this estimator uses image statistics: pass the input images")
            stats = torch.cat((stats, image_statistics(ir), image_statistics(vi)), dim=1)
        prompt = self.to_prompt(stats)
        return DegradationOutput(self.presence(prompt), self.severity(prompt).sigmoid(), prompt)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right to multiples of ``multiple`` (reflect when possible)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class MexFusionNet(nn.Module):
    """Degradation-gated mixture-of-experts restoration + fusion network (see module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        widths, levels = config.widths, len(config.widths)
        num_types = len(config.degradation_types)
        factor = config.pixel_unshuffle
        self.unshuffle = nn.PixelUnshuffle(factor)
        self.shuffle = nn.PixelShuffle(factor)
        self.stem_ir = nn.Conv2d(factor**2, widths[0], 3, padding=1)
        self.stem_vi = nn.Conv2d(3 * factor**2, widths[0], 3, padding=1)
        # The estimator summarises 4x4 pixel patches whatever the stem resolution.
        self.estimator = DegradationEstimator(widths[0], config.prompt_width, num_types, max(1, 4 // factor),
                                              statistics=config.estimator_statistics)
        # Gate condition: degradation condition + a modality flag, since IR and visible images share
        # the encoder but suffer different degradations.
        condition_dim = 2 * num_types + config.prompt_width + 2
        self.encoder_moe = nn.ModuleDict({
            str(level): SparseMoE(f"encoder{level}", widths[level], config.num_experts, config.top_k,
                                  condition_dim, config.expert_expansion, config.gate_noise_floor)
            for level in config.moe_levels
        })
        self.encoder = nn.ModuleList(
            make_blocks(config.block, widths[level], config.encoder_blocks[level], config.heads[level],
                        config.ffn_expansion)
            for level in range(levels)
        )
        pairs = [(widths[level], widths[level + 1]) for level in range(levels - 1)]
        self.downs = nn.ModuleList(Downsample(fine, coarse) for fine, coarse in pairs)
        # Restoration decoder, shared by both modalities.
        self.ups = nn.ModuleList(Upsample(coarse, fine) for fine, coarse in pairs)
        self.decoder = nn.ModuleList(
            make_blocks(config.block, widths[level], config.decoder_blocks[level], config.heads[level],
                        config.ffn_expansion)
            for level in range(levels - 1)
        )
        self.head_ir = nn.Conv2d(widths[0], factor**2, 3, padding=1)
        self.head_vi = nn.Conv2d(widths[0], 3 * factor**2, 3, padding=1)
        # Fusion-aware gating: per-level, per-channel modality weights, then gated experts.
        self.alpha = nn.ParameterList(nn.Parameter(torch.full((1, w, 1, 1), 0.5)) for w in widths)
        self.beta = nn.ParameterList(nn.Parameter(torch.full((1, w, 1, 1), 0.5)) for w in widths)
        fusion_condition = 2 * widths[-1] + 2 * num_types + config.prompt_width
        self.fusion_moe = nn.ModuleDict()
        if "bottleneck" in config.fusion_moe:
            self.fusion_moe["bottleneck"] = SparseMoE(
                "fusion_bottleneck", widths[-1], config.fusion_num_experts, config.fusion_top_k,
                fusion_condition, config.expert_expansion, config.gate_noise_floor)
        if "output" in config.fusion_moe:
            self.fusion_moe["output"] = SparseMoE(
                "fusion_output", widths[0], config.fusion_num_experts, config.fusion_top_k,
                fusion_condition, config.expert_expansion, config.gate_noise_floor)
        self.fusion_ups = nn.ModuleList(Upsample(coarse, fine) for fine, coarse in pairs)
        self.fusion_decoder = nn.ModuleList(
            make_blocks(config.block, widths[level], config.fusion_decoder_blocks[level], config.heads[level],
                        config.ffn_expansion)
            for level in range(levels - 1)
        )
        self.fusion_head: nn.Module
        if config.fusion_output == "pyramid":
            # Starts as the classical choose-max Laplacian fusion of the restored images.
            self.fusion_head = PyramidFusion(widths[0], config.pyramid_levels)
        else:
            self.fusion_head = nn.Conv2d(widths[0], 2 * factor**2, 3, padding=1)
        # Zero-initialised heads: a fresh network restores by identity and fuses the restored
        # sources by a fixed rule, so training starts from a sensible image, not from noise.
        for head in self.output_heads():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    # ------------------------------------------------------------------------------------------
    def output_heads(self) -> list[nn.Conv2d]:
        """The zero-initialised last convolutions: restoration heads (IR, visible) and the fusion head."""
        fusion = self.fusion_head.head if isinstance(self.fusion_head, PyramidFusion) else self.fusion_head
        return [self.head_ir, self.head_vi, fusion]

    def stage_modules(self, stage: str) -> list[nn.Module]:
        """Modules trained in stage ``"restoration"`` (frozen in stage 2) or ``"fusion"``."""
        restoration = [self.stem_ir, self.stem_vi, self.estimator, self.encoder_moe, self.encoder,
                       self.downs, self.ups, self.decoder, self.head_ir, self.head_vi]
        fusion = [self.alpha, self.beta, self.fusion_moe, self.fusion_ups, self.fusion_decoder,
                  self.fusion_head]
        if stage == "restoration":
            return restoration
        if stage == "fusion":
            return fusion
        raise ValueError(f"unknown stage {stage!r}; expected 'restoration' or 'fusion'")

    def forward_features(self, ir: torch.Tensor, vi: torch.Tensor) -> EncodedPair:
        """Encode a padded pair: ``ir (B, 1, H, W)``, ``vi (B, 3, H, W)``, H and W multiples of the stride."""
        batch = ir.shape[0]
        stem_ir, stem_vi = self.stem_ir(self.unshuffle(ir)), self.stem_vi(self.unshuffle(vi))
        degradation = self.estimator(stem_ir, stem_vi, ir, vi)
        modality = torch.zeros(2 * batch, 2, device=ir.device, dtype=ir.dtype)
        modality[:batch, 0] = 1.0
        modality[batch:, 1] = 1.0
        condition = torch.cat((degradation.condition().repeat(2, 1), modality), dim=1)
        x = torch.cat((stem_ir, stem_vi), dim=0)  # one 2B batch through the shared encoder
        levels: list[torch.Tensor] = []
        routing: list[GateDecision] = []
        balance = x.new_zeros(())
        for level, blocks in enumerate(self.encoder):
            if str(level) in self.encoder_moe:
                moe = self.encoder_moe[str(level)](x, condition)
                x, balance = moe.features, balance + moe.balance_loss
                routing.append(GateDecision(f"encoder{level}/ir", moe.indices[:batch], moe.weights[:batch]))
                routing.append(GateDecision(f"encoder{level}/vi", moe.indices[batch:], moe.weights[batch:]))
            x = blocks(x)
            levels.append(x)
            if level < len(self.downs):
                x = self.downs[level](x)
        return EncodedPair([f[:batch] for f in levels], [f[batch:] for f in levels], degradation, routing,
                           balance)

    def forward_restoration(self, encoded: EncodedPair, ir: torch.Tensor, vi: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode both modalities with the shared decoder: restored ``(B, 1, H, W)``, ``(B, 3, H, W)``."""
        batch = ir.shape[0]
        skips = [torch.cat((a, b), dim=0) for a, b in zip(encoded.ir_levels, encoded.vi_levels)]
        x = skips[-1]
        for level in reversed(range(len(self.decoder))):
            x = self.decoder[level](self.ups[level](x) + skips[level])
        residual_ir, residual_vi = self.head_ir(x[:batch]), self.head_vi(x[batch:])
        if self.config.restoration_gate:
            gate_ir, gate_vi = self.restoration_gates(encoded.degradation)
            residual_ir, residual_vi = residual_ir * gate_ir, residual_vi * gate_vi
        return ir + self.shuffle(residual_ir), vi + self.shuffle(residual_vi)

    def restoration_gates(self, degradation: DegradationOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pair, the probability that the infrared / visible image has any degradation
        (``1 - prod(1 - p_type)`` over the estimator's types of that modality), ``(B, 1, 1, 1)`` each.

        Detached: the estimate is learnt from the degradation labels alone, and the restoration
        learns to act in proportion to it, so an input the estimator calls clean passes unchanged
        (a camera's own look is not a degradation to remove).
        """
        probabilities = degradation.probabilities.detach()
        clean = 1.0 - probabilities
        gates = []
        for prefix in ("ir_", "vi_"):
            index = [i for i, name in enumerate(self.config.degradation_types) if name.startswith(prefix)]
            gates.append((1.0 - clean[:, index].prod(dim=1)).view(-1, 1, 1, 1))
        return gates[0], gates[1]

    def forward_fusion(self, encoded: EncodedPair, restored_ir: torch.Tensor, restored_vi: torch.Tensor
                       ) -> tuple[torch.Tensor, list[GateDecision], torch.Tensor]:
        """Fuse: ``F_M = alpha F_V + beta F_I`` per level, gated experts, fusion decoder.

        Returns the fused luminance ``(B, 1, H, W)``, the fusion gates' routing and their balance loss.
        """
        fused_levels = [a * v + b * i for a, b, v, i in
                        zip(self.alpha, self.beta, encoded.vi_levels, encoded.ir_levels)]
        condition = torch.cat((encoded.ir_levels[-1].mean(dim=(2, 3)), encoded.vi_levels[-1].mean(dim=(2, 3)),
                               encoded.degradation.condition()), dim=1)
        routing: list[GateDecision] = []
        balance = restored_ir.new_zeros(())
        x = fused_levels[-1]
        if "bottleneck" in self.fusion_moe:
            moe = self.fusion_moe["bottleneck"](x, condition)
            x, balance = moe.features, balance + moe.balance_loss
            routing.append(GateDecision("fusion_bottleneck", moe.indices, moe.weights))
        for level in reversed(range(len(self.fusion_decoder))):
            x = self.fusion_decoder[level](self.fusion_ups[level](x) + fused_levels[level])
        if "output" in self.fusion_moe:
            moe = self.fusion_moe["output"](x, condition)
            x, balance = moe.features, balance + moe.balance_loss
            routing.append(GateDecision("fusion_output", moe.indices, moe.weights))
        luminance = rgb_to_luminance(restored_vi)
        if isinstance(self.fusion_head, PyramidFusion):
            fused, _ = self.fusion_head(x, restored_ir, luminance)
            return fused, routing, balance
        weight_logit, delta = self.shuffle(self.fusion_head(x)).chunk(2, dim=1)
        weight = weight_logit.sigmoid()
        return weight * restored_ir + (1.0 - weight) * luminance + delta, routing, balance

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, fuse: bool = True) -> ModelOutput:
        """``ir`` ``(B, 1, H, W)``, ``vi`` ``(B, 3, H, W)`` in [0, 1], any H, W -> :class:`ModelOutput`.

        ``fuse=False`` stops after restoration (stage-1 training), leaving ``fused`` None.
        """
        if ir.ndim != 4 or ir.shape[1] != 1:
            raise ValueError(f"infrared input must be (B, 1, H, W), got {tuple(ir.shape)}")
        if vi.ndim != 4 or vi.shape[1] != 3:
            raise ValueError(f"visible input must be (B, 3, H, W), got {tuple(vi.shape)}")
        if ir.shape[0] != vi.shape[0] or ir.shape[-2:] != vi.shape[-2:]:
            raise ValueError(f"infrared {tuple(ir.shape)} and visible {tuple(vi.shape)} batch/size differ")
        height, width = ir.shape[-2:]
        ir_p, vi_p = pad_to_multiple(ir, self.config.stride), pad_to_multiple(vi, self.config.stride)
        encoded = self.forward_features(ir_p, vi_p)
        restored_ir, restored_vi = self.forward_restoration(encoded, ir_p, vi_p)

        def crop(t: torch.Tensor) -> torch.Tensor:
            return t[..., :height, :width]

        assert encoded.balance_loss is not None
        output = ModelOutput(
            restored_ir=crop(restored_ir), restored_vi=crop(restored_vi),
            degradation_logits=encoded.degradation.logits, degradation_severity=encoded.degradation.severity,
            routing=encoded.routing, balance_loss=encoded.balance_loss,
            encoder_balance_loss=encoded.balance_loss,
        )
        if fuse:
            fused_y, fusion_routing, fusion_balance = self.forward_fusion(encoded, restored_ir, restored_vi)
            # Chroma of the displayable (clipped) restored image, so fused and restored colours agree.
            output.fused = crop(replace_luminance(restored_vi.clamp(0.0, 1.0), fused_y))
            output.fused_luminance = crop(fused_y)
            output.routing = output.routing + fusion_routing
            output.balance_loss = output.balance_loss + fusion_balance
        return output
