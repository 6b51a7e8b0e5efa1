"""Named model configurations (timm style): one dataclass, one dict, one factory.

``MODEL_CONFIGS`` maps a name to a :class:`ModelConfig`; ``create_model(name, **overrides)`` in
``mex_fusion_ros.model`` builds any of them. The configuration is stored in every weights file and
checked when the weights are loaded, so a field change is a deliberate, visible event.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mex_fusion_ros.data.degradations import DEGRADATION_TYPES

BLOCK_TYPES = ("naf", "restormer")
FUSION_OUTPUTS = ("pyramid", "blend")


class ConfigError(ValueError):
    """A model configuration name, field or value is not valid; the message names it."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`~mex_fusion_ros.model.network.MexFusionNet`.

    The encoder has ``len(widths)`` levels; the last one is the bottleneck, so the network's
    stride (input sizes are padded to a multiple of it) is ``pixel_unshuffle * 2 ** (len(widths) - 1)``.
    """

    name: str
    #: Space-to-depth factor of the stems (and depth-to-space of the heads): 4 runs the whole
    #: network on 4x4 pixel cells (1/16 of the positions), the main saving of the real-time
    #: configurations; the heads predict every pixel of a cell.
    pixel_unshuffle: int = 4
    #: Channels per level, finest first; the last entry is the bottleneck.
    widths: tuple[int, ...] = (32, 48, 64, 96)
    #: Blocks per encoder level (same length as ``widths``; the last entry is the bottleneck).
    encoder_blocks: tuple[int, ...] = (0, 1, 1, 2)
    #: Blocks per decoder level, finest first (``len(widths) - 1`` entries).
    decoder_blocks: tuple[int, ...] = (0, 1, 1)
    #: Blocks per level of the fusion decoder (``len(widths) - 1`` entries).
    fusion_decoder_blocks: tuple[int, ...] = (0, 1, 1)
    #: "naf": NAFNet-style depthwise conv + simple gate (fast); "restormer": MDTA + GDFN transformer.
    block: str = "naf"
    #: Attention heads per level (restormer blocks only).
    heads: tuple[int, ...] = (1, 2, 4, 8)
    #: Hidden expansion of the feed-forward part of a block (GDFN uses 2.66 in Restormer).
    ffn_expansion: float = 2.0
    #: Encoder levels (0 = full resolution) with a degradation-aware gated MoE before their blocks.
    moe_levels: tuple[int, ...] = (0, 1, 2)
    num_experts: int = 4
    top_k: int = 2
    #: Hidden expansion of one expert (a depthwise 3x3 + gated 1x1 conv block).
    expert_expansion: float = 1.0
    #: Fusion-aware gated MoE positions: "bottleneck" (before the fusion decoder) and/or "output"
    #: (after the last fusion decoder level, at full resolution, as in TG-ECNet Appendix A.3).
    fusion_moe: tuple[str, ...] = ("bottleneck",)
    fusion_num_experts: int = 4
    fusion_top_k: int = 2
    #: How the fused luminance is formed from the restored images. "pyramid": the fusion decoder
    #: predicts, at its resolution, the weights of a full-resolution Laplacian-pyramid blend of the
    #: two restored luminances (``model.pyramid``; keeps every pixel of restored detail).
    #: "blend": one per-pixel weight plus a residual from a pixel-shuffle head (weights trained
    #: before the pyramid existed load with this).
    fusion_output: str = "blend"
    #: Detail levels of the "pyramid" fusion; ``2 ** pyramid_levels`` must divide the stride.
    pyramid_levels: int = 4
    #: Scale each image's restoration residual by the estimated probability that the image is
    #: degraded at all (``MexFusionNet.restoration_gates``): inputs judged clean pass unchanged.
    restoration_gate: bool = False
    #: Width of the degradation estimator (task prompt) features.
    prompt_width: int = 32
    #: Feed the estimator fixed, size-independent image statistics (robust noise level, gradient
    #: energy at three scales, brightness) next to its learned features. Without them the learned
    #: pooled features did not pick up noise or defocus (presence stayed at the base rate).
    estimator_statistics: bool = False
    #: Degradation types the estimator predicts, in label order.
    degradation_types: tuple[str, ...] = DEGRADATION_TYPES
    #: Std of the gate noise floor added to softplus(noise logits) while training.
    gate_noise_floor: float = 1e-2

    def __post_init__(self) -> None:
        levels = len(self.widths)
        if levels < 3:
            raise ConfigError(f"{self.name}: need at least 3 levels, got widths={self.widths}")
        checks = {
            "encoder_blocks": (self.encoder_blocks, levels),
            "heads": (self.heads, levels),
            "decoder_blocks": (self.decoder_blocks, levels - 1),
            "fusion_decoder_blocks": (self.fusion_decoder_blocks, levels - 1),
        }
        for key, (values, expected) in checks.items():
            if len(values) != expected:
                raise ConfigError(f"{self.name}: {key} needs {expected} entries, got {values}")
        if self.pixel_unshuffle not in (1, 2, 4):
            raise ConfigError(f"{self.name}: pixel_unshuffle must be 1, 2 or 4, got {self.pixel_unshuffle}")
        if self.block not in BLOCK_TYPES:
            raise ConfigError(f"{self.name}: block must be one of {BLOCK_TYPES}, got {self.block!r}")
        if any(not 0 <= level < levels - 1 for level in self.moe_levels):
            raise ConfigError(f"{self.name}: moe_levels {self.moe_levels} must lie in 0..{levels - 2}")
        for key, n, k in (
            ("num_experts/top_k", self.num_experts, self.top_k),
            ("fusion_num_experts/fusion_top_k", self.fusion_num_experts, self.fusion_top_k),
        ):
            if not 1 <= k <= n:
                raise ConfigError(f"{self.name}: {key} = {n}/{k}; need 1 <= top_k <= num_experts")
        unknown = set(self.fusion_moe) - {"bottleneck", "output"}
        if unknown:
            raise ConfigError(f"{self.name}: unknown fusion_moe positions {sorted(unknown)}")
        if self.fusion_output not in FUSION_OUTPUTS:
            raise ConfigError(f"{self.name}: fusion_output must be one of {FUSION_OUTPUTS}, "
                              f"got {self.fusion_output!r}")
        if self.fusion_output == "pyramid" and (self.pyramid_levels < 1 or self.stride % 2 ** self.pyramid_levels):
            raise ConfigError(f"{self.name}: pyramid_levels={self.pyramid_levels} needs 2^levels to divide "
                              f"the stride {self.stride}")
        if self.block == "restormer" and any(w % h for w, h in zip(self.widths, self.heads)):
            raise ConfigError(f"{self.name}: widths {self.widths} must be divisible by heads {self.heads}")

    @property
    def stride(self) -> int:
        """Input height and width are padded to a multiple of this."""
        return self.pixel_unshuffle * 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for weights files and YAML."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ConfigError`` naming them."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown model configuration keys {unknown}; valid keys: {sorted(known)}")
        converted = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
        return cls(**converted)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed (``ConfigError`` for an unknown field)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown model configuration keys {unknown}; valid keys: {sorted(known)}")
        converted = {key: tuple(value) if isinstance(value, list) else value
                     for key, value in overrides.items()}
        return dataclasses.replace(self, **converted)


#: Registered configurations. ``nano`` is the shipped real-time default.
MODEL_CONFIGS: dict[str, ModelConfig] = {
    # Real-time: 4x4 space-to-depth, NAFNet-style conv blocks, no block at the finest level (only the
    # gated experts run there), 4 experts top-2 before the first three encoder levels. The first two
    # levels are narrow (16, 32; first 32, 48, then 24, 40) so that a 640x512 pair with the
    # full-resolution pyramid fusion costs less than a YOLOv8n forward on one CPU thread; retrained,
    # the narrower network restored and fused as well (docs/model.md, "Speed").
    "nano": ModelConfig(name="nano", widths=(16, 32, 64, 96), estimator_statistics=True, fusion_output="pyramid",
                        pyramid_levels=5, restoration_gate=True),
    # Wider and deeper nano for GPUs (still conv blocks).
    "small": ModelConfig(
        name="small",
        pixel_unshuffle=2,
        widths=(32, 64, 96, 128),
        encoder_blocks=(1, 2, 2, 4),
        decoder_blocks=(1, 2, 2),
        fusion_decoder_blocks=(1, 1, 2),
        num_experts=6,
        top_k=2,
        expert_expansion=2.0,
        fusion_num_experts=6,
        fusion_top_k=2,
        prompt_width=48,
        estimator_statistics=True,
        fusion_output="pyramid",
        restoration_gate=True,
    ),
    # TG-ECNet scale (ICML 2025, Appendix A.3): Restormer blocks, dim 48, blocks [4, 6, 6, 8],
    # 11 experts top-6 before the first three encoder levels and after the last decoder level.
    "paper": ModelConfig(
        name="paper",
        pixel_unshuffle=1,
        widths=(48, 96, 192, 384),
        encoder_blocks=(4, 6, 6, 8),
        decoder_blocks=(4, 6, 6),
        fusion_decoder_blocks=(4, 6, 6),
        block="restormer",
        heads=(1, 2, 4, 8),
        ffn_expansion=2.66,
        moe_levels=(0, 1, 2),
        num_experts=11,
        top_k=6,
        expert_expansion=2.0,
        fusion_moe=("output",),
        fusion_num_experts=11,
        fusion_top_k=6,
        prompt_width=64,
        estimator_statistics=True,
        fusion_output="pyramid",
        pyramid_levels=3,
        restoration_gate=True,
    ),
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The registered configuration ``name`` with ``overrides`` applied."""
    try:
        config = MODEL_CONFIGS[name]
    except (KeyError, TypeError):
        valid = ", ".join(MODEL_CONFIGS)
        raise ConfigError(f"unknown model configuration {name!r}; valid: {valid}") from None
    return config.replace(**overrides) if overrides else config


def list_models() -> list[str]:
    """Names of the registered configurations."""
    return list(MODEL_CONFIGS)


__all__ = ["BLOCK_TYPES", "FUSION_OUTPUTS", "MODEL_CONFIGS", "ConfigError", "ModelConfig", "get_config", "list_models"]
