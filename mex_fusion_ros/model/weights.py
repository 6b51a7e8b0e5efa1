"""Weights files: the model configuration, the state dict and training metadata in one ``.pt``.

Layout (a ``torch.save`` dict): ``format`` (= :data:`WEIGHTS_FORMAT`), ``version``, ``config``
(``ModelConfig.to_dict()``), ``state_dict``, ``metadata`` (free-form: data, command, steps, time,
validation metrics). Loading rebuilds the network from the stored configuration, optionally checks
it against the configuration the caller expects, and loads the state dict strictly. Every failure
(missing, unreadable, wrong format, configuration mismatch, tensors that do not fit) raises one
:class:`WeightsError` naming the file.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from mex_fusion_ros.model.config import ConfigError, ModelConfig, get_config
from mex_fusion_ros.model.network import MexFusionNet

WEIGHTS_FORMAT = "mex_fusion_ros.weights"
WEIGHTS_VERSION = 1
PACKAGE = "mex_fusion_ros"
#: Source checkout's weights folder (``<repo>/weights``), used when the package is not installed.
SOURCE_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


class WeightsError(RuntimeError):
    """A weights file cannot be used; the message names the file and the reason."""


def save_weights(path: str | os.PathLike[str], model: MexFusionNet,
                 metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s configuration and weights (on the CPU) to ``path``; returns the path.

    The file is written to a temporary name first and renamed, so a crash never leaves a truncated
    weights file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def read_weights_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload of a weights file, validated for format (``WeightsError`` otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated/corrupt files
        raise WeightsError(f"weights file {path} cannot be read (corrupt or not a torch file): {error}"
                           ) from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"weights file {path} is not a {WEIGHTS_FORMAT} file (no 'format' marker)")
    if payload.get("version") != WEIGHTS_VERSION:
        raise WeightsError(f"weights file {path} has format version {payload.get('version')!r}, "
                           f"this code reads version {WEIGHTS_VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise WeightsError(f"weights file {path} lacks its {key!r} entry")
    return payload


def load_weights(
    path: str | os.PathLike[str], expected: str | ModelConfig | None = None
) -> tuple[MexFusionNet, dict[str, Any]]:
    """Build the network stored in ``path`` (CPU, eval mode) and return it with its metadata.

    ``expected``: a configuration name or :class:`ModelConfig` the file must have been trained
    with; any differing field raises ``WeightsError`` listing the differences.
    """
    payload = read_weights_file(path)
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (ConfigError, TypeError) as error:
        raise WeightsError(f"weights file {path} has an invalid model configuration: {error}") from None
    if expected is not None:
        try:
            wanted = get_config(expected) if isinstance(expected, str) else expected
        except ConfigError as error:
            raise WeightsError(f"weights file {path}: {error}") from None
        stored, required = config.to_dict(), wanted.to_dict()
        differences = [f"{key}: file {stored.get(key)!r} != expected {required[key]!r}"
                       for key in required if stored.get(key) != required[key]]
        if differences:
            raise WeightsError(f"weights file {path} was trained with another configuration: "
                               + "; ".join(differences))
    model = MexFusionNet(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise WeightsError(f"weights file {path} does not fit its configuration {config.name!r}: {error}"
                           ) from None
    model.eval()
    return model, dict(payload.get("metadata") or {})


def weights_file_name(config_name: str) -> str:
    """``mex_<config_name>.pt``: the name of shipped weights."""
    return f"mex_{config_name}.pt"


def weights_search_paths(config_name: str) -> list[Path]:
    """Where shipped weights of ``config_name`` are looked for, in order: the installed package's
    ``share/mex_fusion_ros/weights`` (ament index), then the source checkout's ``weights/``."""
    candidates: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        # OSError: AMENT_PREFIX_PATH unset (not in a sourced ROS environment).
        with contextlib.suppress(PackageNotFoundError, OSError):
            share = Path(get_package_share_directory(PACKAGE))
            candidates.append(share / "weights" / weights_file_name(config_name))
    except ImportError:
        pass
    candidates.append(SOURCE_WEIGHTS_DIR / weights_file_name(config_name))
    return candidates


def shipped_weights_path(config_name: str) -> Path:
    """Path of the shipped weights of a configuration (first existing of :func:`weights_search_paths`).

    Raises ``WeightsError`` listing the places searched when none exists.
    """
    get_config(config_name)  # unknown names fail with the list of valid ones
    candidates = weights_search_paths(config_name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise WeightsError(f"no shipped weights for model {config_name!r}; looked for {searched} "
                       f"(train them with `mex-fusion train`, see weights/README.md)")
