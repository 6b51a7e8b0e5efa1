"""Weights files: the model configuration, the state dict and training metadata in one ``.pt``.

Layout (a ``torch.save`` dict): ``format`` (= :data:`WEIGHTS_FORMAT`), ``version``, ``config``
(``ModelConfig.to_dict()``), ``state_dict``, ``metadata`` (free-form: data, command, steps, time,
validation metrics). Loading rebuilds the network from the stored configuration, optionally checks
it against the configuration the caller expects, and loads the state dict strictly. Every failure
(missing, empty, unreadable, wrong format, pickled code, non-finite tensors, configuration mismatch,
tensors that do not fit) raises one :class:`WeightsError`: one line naming the file and the reason.

Files are always read with ``torch.load(weights_only=True)``: a weights file is data, and a file
that needs arbitrary unpickling (code) is refused, never loaded "unsafely". torch's own messages
for such files run to many lines and end in the advice to load with ``weights_only=False``; they
are replaced here by one line saying what the file is.
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from mex_fusion_ros.model.calibration import CalibrationError, validate_thresholds
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
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    return _write_payload(path, payload)


def _write_payload(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary name, then rename: a crash never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def update_weights_metadata(path: str | os.PathLike[str], updates: dict[str, Any],
                            out: str | os.PathLike[str] | None = None) -> Path:
    """Merge ``updates`` into the metadata of the weights file ``path`` and write it to ``out``
    (default: ``path`` itself, replaced atomically). Weights and configuration are kept as they are."""
    payload = read_weights_file(path)
    metadata = payload.get("metadata")
    payload["metadata"] = {**(metadata if isinstance(metadata, dict) else {}), **updates}
    return _write_payload(out if out is not None else path, payload)


#: torch.save writes zip archives (since torch 1.6); every file it writes starts with this.
_ZIP_MAGIC = b"PK\x03\x04"
#: How torch's weights-only unpickler names a global it refuses (a class or function: code).
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+?)(?: whose| was|\.?$)|unrecognized function (\S+)", re.MULTILINE)


def _load_failure_reason(head: bytes, error: BaseException) -> str:
    """One line for a ``torch.load(weights_only=True)`` failure, without torch's unsafe advice.

    ``head``: the file's first bytes, which tell a damaged torch archive from something else.
    """
    message = str(error)
    refused = _REFUSED_GLOBAL.search(message)
    if refused:
        name = refused.group(1) or refused.group(2)
        return (f"refused: the file contains pickled code ({name}) that weights_only loading does not "
                "allow; a mex_fusion_ros weights file holds tensors and plain data only")
    if "TorchScript" in message:
        return "not a mex_fusion_ros weights file (a TorchScript archive)"
    if head.startswith(_ZIP_MAGIC):
        if "central directory" in message or "PytorchStreamReader" in message:
            return "cannot be read: a truncated or damaged torch archive (zip)"
        return "not a mex_fusion_ros weights file (a zip archive that torch.save did not write)"
    if head.startswith(b"\x80"):  # pickle's PROTO opcode: a bare pickle (torch.save writes zips)
        return "not a mex_fusion_ros weights file (a bare pickle, not a torch.save archive)"
    return f"not a mex_fusion_ros weights file (not a torch.save archive; it starts with {head[:8]!r})"


def _first_non_finite(state_dict: dict[str, Any]) -> str | None:
    """The first entry of ``state_dict`` that is not a tensor or holds NaN/inf, described; else None."""
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            return f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor"
        if value.is_floating_point() or value.is_complex():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                return (f"tensor {name!r} holds {bad} non-finite (NaN/inf) value{'s' if bad > 1 else ''} "
                        f"of {value.numel()}; the training diverged or the file is damaged")
    return None


def read_weights_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload of a weights file, validated for format and finite tensors (``WeightsError``)."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights file {path} is a directory, not a file")
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with path.open("rb") as stream:
            head = stream.read(64)
    except OSError as error:
        raise WeightsError(f"weights file {path} cannot be read: {error.strerror or error}") from None
    if not head:
        raise WeightsError(f"weights file {path} is an empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise next to the one-line error that follows.
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated/corrupt/foreign files
        raise WeightsError(f"weights file {path}: {_load_failure_reason(head, error)}") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"weights file {path} is not a {WEIGHTS_FORMAT} file (no 'format' marker)")
    if payload.get("version") != WEIGHTS_VERSION:
        raise WeightsError(f"weights file {path} has format version {payload.get('version')!r}, "
                           f"this code reads version {WEIGHTS_VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise WeightsError(f"weights file {path} lacks its {key!r} entry")
    # A NaN weight turns every output pixel NaN, which the node publishes as black frames.
    problem = _first_non_finite(payload["state_dict"])
    if problem:
        raise WeightsError(f"weights file {path} is unusable: {problem}")
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
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise WeightsError(f"weights file {path} has invalid metadata ({type(metadata).__name__}, not a mapping)")
    try:
        validate_thresholds((metadata or {}).get("presence_thresholds", {}), config.degradation_types)
    except CalibrationError as error:
        raise WeightsError(f"weights file {path}: {error}") from None
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
