"""The degradation-gated mixture-of-experts fusion network (ROS-free PyTorch).

``create_model(name, **overrides)`` builds a registered configuration (``MODEL_CONFIGS``: nano,
small, paper); ``model.fuser.Fuser.from_weights(path)`` loads trained weights for inference;
``model.weights.shipped_weights_path(name)`` finds the weights shipped with the package.
"""
from __future__ import annotations

from typing import Any

from mex_fusion_ros.model.config import MODEL_CONFIGS, ConfigError, ModelConfig, get_config, list_models
from mex_fusion_ros.model.network import GateDecision, MexFusionNet, ModelOutput


def create_model(name: str | ModelConfig, **overrides: Any) -> MexFusionNet:
    """Build a freshly initialised network from a registered configuration name (or a config)."""
    config = name.replace(**overrides) if isinstance(name, ModelConfig) else get_config(name, **overrides)
    return MexFusionNet(config)


__all__ = [
    "MODEL_CONFIGS",
    "ConfigError",
    "GateDecision",
    "MexFusionNet",
    "ModelConfig",
    "ModelOutput",
    "create_model",
    "get_config",
    "list_models",
]
