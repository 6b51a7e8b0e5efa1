"""Two-stage training of the MoE fusion network (``mex-fusion train``).

Stage 1 (``restoration``): the stems, degradation estimator, shared encoder with its gated experts
and the shared restoration decoder learn to restore both modalities from synthetic degradations
(L1 + Sobel-gradient L1 to the clean sources, gate balancing loss, degradation-label loss).
Stage 2 (``fusion``): the stage-1 modules are frozen (eval mode, no gradients) and the fusion-aware
parts (alpha/beta modality weights, fusion gates and experts, fusion decoder and head) learn to fuse
(max-intensity, Sobel-gradient-max, SSIM and fidelity to the clean sources, balancing loss).

Schedules are in optimiser steps. The run folder holds ``train.csv`` (losses), ``val.csv``
(validation metrics), ``last.pt`` (resumable checkpoint: model, optimiser, step, RNG, written
every ``checkpoint_minutes`` and at stage ends), ``stage1.pt`` and the final ``mex_<model>.pt``
(weights files, see ``model.weights``). Multi-process training: ``torchrun --nproc_per_node N
-m mex_fusion_ros.cli train ...`` (DistributedSampler over the crops, rank 0 logs and saves).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from mex_fusion_ros.data.degradations import CameraVariation
from mex_fusion_ros.data.paired import ImagePair, find_pairs, read_pair_names, select_pairs
from mex_fusion_ros.model import create_model
from mex_fusion_ros.model.losses import (
    FUSION_TERMS,
    LossWeights,
    degradation_loss,
    fusion_losses,
    restoration_losses,
)
from mex_fusion_ros.model.network import MexFusionNet, ModelOutput
from mex_fusion_ros.model.weights import load_weights, save_weights, weights_file_name

STAGES = ("restoration", "fusion")


class TrainConfigError(ValueError):
    """The training configuration file has an unknown key or a bad value; the message names it."""


@dataclass(frozen=True)
class DataConfig:
    #: Folders of registered training pairs (``ir/`` + ``vi/``; MSRS/M3FD/LLVIP layouts work); a
    #: single folder may be given as a string.
    train: tuple[str, ...] = ("../shared/data/roadscene/train",)
    #: Text file of pair names (one per line) kept out of training: a held-out validation split
    #: of a training folder, evaluated with ``mex-fusion eval --pairs`` (empty: none).
    holdout: str = ""
    #: Sampling weight of each pair of each ``train`` folder (one per folder; empty: all 1): a
    #: small second camera's pairs can be drawn as often as a large first one's.
    train_weights: tuple[float, ...] = ()
    #: Folder of validation pairs (empty: no validation).
    val: str = "../shared/data/roadscene/val"
    #: Side of the square random training crops.
    crop_size: int = 128
    #: Crops per epoch (each from a random pair; one epoch = this many items).
    samples_per_epoch: int = 2048
    #: DataLoader worker processes (0 = load in the training process).
    workers: int = 1
    #: Frames of the synthetic demo scene (``bag.scene``, 320x256, four seeds, day to dusk) added to
    #: the training pairs, so the shipped network also knows the look of the built-in demo.
    scene_frames: int = 0
    #: Camera augmentation (``DegradedCropDataset``): probability of each look change of
    #: ``data.degradations.vary_camera`` (0 = off), and the (low, high) range of the resolution
    #: change of half of the crops (empty = off).
    camera_variation: float = 0.0
    rescale: tuple[float, ...] = ()
    #: Round the degraded training inputs to this many bits (8 or 16; 0 = float), as cameras, image
    #: files and ``mex-fusion eval`` (``--input-bits``, default 8) deliver them.
    input_bits: int = 0
    #: After training, calibrate the degradation presence thresholds (``mex-fusion calibrate``) on
    #: every N-th training pair of each ``train`` folder, held-out pairs excluded (0 = skip).
    calibration_every: int = 0

@dataclass(frozen=True)
class StageConfig:
    #: Optimiser steps of this stage.
    steps: int = 1000
    #: Peak AdamW learning rate (cosine decay to ``lr * min_lr_ratio`` after a linear warm-up).
    lr: float = 1e-3
    min_lr_ratio: float = 0.02
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    #: Crops per optimiser step (per process under torchrun).
    batch_size: int = 8
    #: Gradient-norm clipping (0 = off).
    grad_clip: float = 1.0


@dataclass(frozen=True)
class ValidationConfig:
    #: Validate every this many steps (and at the end of each stage); 0 = only at stage ends.
    every: int = 500
    #: Validation pairs used (first N of the folder, sorted) and the centre crop side.
    images: int = 4
    crop_size: int = 256
    presets: tuple[str, ...] = ("clean", "noise25", "noise50", "haze", "defocus", "stripe", "mixed")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (YAML: sections ``data``, ``restoration``, ``fusion``, ``loss``,
    ``validation`` and the top-level keys below). Merge order: defaults < file < command line."""

    #: Model configuration name (``create_model``) and field overrides.
    model: str = "nano"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = DataConfig()
    restoration: StageConfig = StageConfig()
    fusion: StageConfig = StageConfig()
    loss: LossWeights = LossWeights()
    validation: ValidationConfig = ValidationConfig()
    seed: int = 0
    #: Write the resumable ``last.pt`` at least this often (wall-clock minutes).
    checkpoint_minutes: float = 5.0
    #: Append a ``train.csv`` row every this many steps.
    log_every: int = 20
    #: torch intra-op threads of the training process (0 = torch's default).
    threads: int = 0
    #: Training device: auto, cpu, cuda, cuda:N.
    device: str = "auto"


_SECTIONS: dict[str, type] = {"data": DataConfig, "restoration": StageConfig, "fusion": StageConfig,
                              "loss": LossWeights, "validation": ValidationConfig}


def _build_dataclass(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise TrainConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TrainConfigError(f"{where}: unknown keys {unknown}; valid keys: {sorted(fields)}")
    defaults = cls()
    converted: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        if isinstance(default, tuple) and isinstance(value, str) and key == "train":
            value = (value,)
        if isinstance(default, tuple):
            if not isinstance(value, list | tuple):
                raise TrainConfigError(f"{where}.{key}: expected a list, got {value!r}")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise TrainConfigError(f"{where}.{key}: expected true/false, got {value!r}")
        elif isinstance(default, int | float) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TrainConfigError(f"{where}.{key}: expected a number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise TrainConfigError(f"{where}.{key}: expected an integer, got {value!r}")
            value = type(default)(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise TrainConfigError(f"{where}.{key}: expected a string, got {value!r}")
        converted[key] = value
    return dataclasses.replace(defaults, **converted)


def train_config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Validate a parsed YAML mapping into a :class:`TrainConfig` (``TrainConfigError`` on bad keys)."""
    values = dict(values or {})
    sections = {name: _build_dataclass(cls, values.pop(name), name)
                for name, cls in _SECTIONS.items() if name in values}
    overrides = values.pop("model_overrides", {}) or {}
    if not isinstance(overrides, Mapping):
        raise TrainConfigError(f"model_overrides: expected a mapping, got {overrides!r}")
    top = _build_dataclass(TrainConfig, values, "train config")
    config = dataclasses.replace(top, model_overrides=dict(overrides), **sections)
    for stage in STAGES:
        stage_config: StageConfig = getattr(config, stage)
        if stage_config.steps < 0 or stage_config.batch_size < 1:
            raise TrainConfigError(f"{stage}: steps must be >= 0 and batch_size >= 1")
    data = config.data
    if not data.train:
        raise TrainConfigError("data.train: name at least one folder of training pairs")
    if data.train_weights and (len(data.train_weights) != len(data.train)
                               or any(w < 0 for w in data.train_weights)):
        raise TrainConfigError(f"data.train_weights: one non-negative weight per train folder, got "
                               f"{list(data.train_weights)} for {len(data.train)} folders")
    if data.rescale and (len(data.rescale) != 2 or not 0 < data.rescale[0] <= data.rescale[1]):
        raise TrainConfigError(f"data.rescale: expected [low, high] with 0 < low <= high, got {list(data.rescale)}")
    if data.input_bits not in (0, 8, 16):
        raise TrainConfigError(f"data.input_bits: expected 8, 16 or 0 (float inputs), got {data.input_bits}")
    if data.calibration_every < 0:
        raise TrainConfigError(f"data.calibration_every: expected 0 (skip) or N >= 1, got {data.calibration_every}")
    if not 0.0 <= data.camera_variation <= 1.0:
        raise TrainConfigError(f"data.camera_variation: expected a probability in [0, 1], got {data.camera_variation}")
    return config


def training_pairs(data: DataConfig) -> tuple[tuple[ImagePair, ...], tuple[float, ...]]:
    """Every pair of the ``data.train`` folders except those named in ``data.holdout``, and each
    pair's sampling weight (``data.train_weights`` of its folder)."""
    held_out = read_pair_names(data.holdout) if data.holdout else ()
    pairs: list[ImagePair] = []
    weights: list[float] = []
    found = 0
    for index, folder in enumerate(data.train):
        listed = find_pairs(folder).pairs
        kept = select_pairs(listed, drop=held_out)
        found += len(listed)
        pairs.extend(kept)
        weights += [data.train_weights[index] if data.train_weights else 1.0] * len(kept)
    if held_out and len(pairs) == found:
        raise TrainConfigError(f"data.holdout: none of the pairs in {data.holdout} is in {list(data.train)}")
    return tuple(pairs), tuple(weights)


def calibrate_presence(weights: Path, model: MexFusionNet, data: DataConfig, *, progress: bool = True) -> None:
    """Choose the presence thresholds of the trained ``model`` on its training pairs (every
    ``data.calibration_every``-th of each folder, held-out pairs excluded) and store them in ``weights``."""
    from mex_fusion_ros.model.calibration import calibrate, calibration_pairs
    from mex_fusion_ros.model.fuser import Fuser
    from mex_fusion_ros.model.weights import update_weights_metadata

    groups = calibration_pairs(data.train, data.holdout or None, data.calibration_every)
    fuser = Fuser(model, device=next(model.parameters()).device)
    result = calibrate(fuser, groups, model.config.degradation_types, progress=progress,
                       holdout=data.holdout or None, command=f"training data, every {data.calibration_every}")
    update_weights_metadata(weights, {"presence_thresholds": result.thresholds, "calibration": result.metadata})


def describe_training_data(data: DataConfig) -> str:
    """One line for the weights metadata: folders, held-out split, scene frames, augmentation."""
    parts = [" + ".join(data.train if not data.train_weights else
                        [f"{folder} (weight {weight:g})" for folder, weight in zip(data.train, data.train_weights)])]
    if data.holdout:
        parts.append(f"without the pairs of {data.holdout}")
    if data.scene_frames:
        parts.append(f"+ {data.scene_frames} demo-scene frames")
    if data.camera_variation or data.rescale:
        parts.append(f"(camera variation p={data.camera_variation}, rescale {list(data.rescale) or 'off'})")
    if data.input_bits:
        parts.append(f"inputs rounded to {data.input_bits} bits")
    return " ".join(parts)


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read and validate a training YAML file; relative data folders resolve against the working dir."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"training configuration {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise TrainConfigError(f"training configuration {path} is not valid YAML: {error}") from None
    try:
        return train_config_from_dict(values)
    except TrainConfigError as error:
        raise TrainConfigError(f"{path}: {error}") from None


def train_config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain dict (tuples as lists) for YAML/metadata."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


# ----------------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a torchrun job (defaults: a single process without a process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: True inside a process group (also with world size 1): the model is wrapped in DDP.
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the torchrun process group when ``WORLD_SIZE`` is set (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and "RANK" not in os.environ:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                              enabled=True)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (the local rank's GPU) when available, else CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError(f"device {name!r} requested but CUDA is not available")
    return device


# ----------------------------------------------------------------------------------------------
# Schedules, freezing, batches
# ----------------------------------------------------------------------------------------------
def learning_rate(stage: StageConfig, step_in_stage: int) -> float:
    """Linear warm-up then cosine decay from ``lr`` to ``lr * min_lr_ratio`` over the stage."""
    if stage.warmup_steps > 0 and step_in_stage < stage.warmup_steps:
        return stage.lr * (step_in_stage + 1) / stage.warmup_steps
    span = max(1, stage.steps - stage.warmup_steps)
    progress = min(1.0, (step_in_stage - stage.warmup_steps) / span)
    floor = stage.lr * stage.min_lr_ratio
    return floor + 0.5 * (stage.lr - floor) * (1.0 + math.cos(math.pi * progress))


def configure_stage(model: MexFusionNet, stage: str) -> list[nn.Parameter]:
    """Set ``requires_grad`` and train/eval modes for ``stage``; return the trainable parameters.

    Stage 2 freezes every stage-1 module (and puts it in eval mode, so its gates route without
    noise, exactly as at inference).
    """
    model.train()
    trainable = model.stage_modules(stage)
    frozen = model.stage_modules("fusion" if stage == "restoration" else "restoration")
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        if stage == "fusion":
            module.eval()
    parameters: list[nn.Parameter] = []
    for module in trainable:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
            parameters.append(parameter)
    return parameters


def _cycle(loader: DataLoader, start_epoch: int) -> Iterator[tuple[int, dict[str, Any]]]:
    epoch = start_epoch
    while True:
        loader.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1


def compute_losses(model: nn.Module, batch: Mapping[str, Any], stage: str, weights: LossWeights,
                   device: torch.device) -> tuple[torch.Tensor, dict[str, float], ModelOutput]:
    """Forward a training batch and return the weighted total loss, its terms and the output."""
    ir, vi = batch["ir"].to(device), batch["vi"].to(device)
    clean_ir, clean_vi = batch["clean_ir"].to(device), batch["clean_vi"].to(device)
    output: ModelOutput = model(ir, vi, fuse=stage == "fusion")
    # Stage 2: only the fusion gates learn; the frozen encoder gates' balance is not a training signal.
    balance = output.balance_loss
    if stage == "fusion":
        balance = balance - output.encoder_balance_loss
    terms: dict[str, torch.Tensor] = {"balance": balance}
    if stage == "restoration":
        image_terms = restoration_losses(output.restored_ir, output.restored_vi, clean_ir, clean_vi)
        presence, severity = degradation_loss(output.degradation_logits, output.degradation_severity,
                                              batch["present"].to(device), batch["label"].to(device))
        terms.update(image_terms, presence=presence, severity=severity)
        total = (weights.restoration_l1 * terms["l1"] + weights.restoration_gradient * terms["gradient"]
                 + weights.degradation_presence * presence + weights.degradation_severity * severity)
    else:
        assert output.fused_luminance is not None
        fusion_weights = {name: getattr(weights, f"fusion_{name}") for name in FUSION_TERMS}
        fusion_terms = fusion_losses(output.fused_luminance, clean_ir, clean_vi,
                                     [name for name, weight in fusion_weights.items() if weight != 0.0])
        terms.update(fusion_terms)
        total = sum(fusion_weights[name] * value for name, value in fusion_terms.items())
    total = total + weights.balance * balance
    return total, {name: float(value.detach()) for name, value in terms.items()}, output


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.clamp(0, 1) - b) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def _image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W)`` -> ``(1, 1, H, W)``, ``(H, W, 3)`` -> ``(1, 3, H, W)`` float tensor on ``device``."""
    chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw[None], dtype=np.float32)).to(device)


@torch.no_grad()
def validate(model: MexFusionNet, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Fast validation on centre crops of the first val pairs, every preset of ``config.validation``.

    Metrics: PSNR of the restored IR/visible to the clean sources, each over the presets that
    degrade that modality only (an untouched input would add a huge, meaningless PSNR; the gated
    restoration passes it through unchanged), PSNR of the fused luminance from
    the averaged MSE to both clean sources (as the evaluation) and the same for average fusion of
    the degraded inputs (reference), degradation presence accuracy per type and per image (all
    types right), mean severity error.
    """
    from mex_fusion_ros.data.degradations import DEGRADATION_TYPES, apply_preset
    from mex_fusion_ros.data.paired import find_pairs, read_pair
    from mex_fusion_ros.model.layers import rgb_to_luminance

    listing = find_pairs(config.data.val)
    pairs = sorted(listing.pairs, key=lambda p: p.name)[: config.validation.images]
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    side = config.validation.crop_size
    for pair_index, pair in enumerate(pairs):
        ir, vi = read_pair(pair)
        height, width = ir.shape
        top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
        ir, vi = ir[top:top + side, left:left + side], vi[top:top + side, left:left + side]
        if vi.ndim == 2:
            vi = np.repeat(vi[:, :, None], 3, axis=2)
        for preset_index, preset in enumerate(config.validation.presets):
            degraded = apply_preset(preset, ir, vi, seed=1000 * pair_index + preset_index)
            d_ir, d_vi, c_ir, c_vi = (_image_tensor(a, device) for a in (degraded.ir, degraded.vi, ir, vi))
            out = model(d_ir, d_vi)
            assert out.fused_luminance is not None
            c_y = rgb_to_luminance(c_vi)
            fused = out.fused_luminance.clamp(0, 1)
            mse = 0.5 * (float(torch.mean((fused - c_ir) ** 2)) + float(torch.mean((fused - c_y) ** 2)))
            average = 0.5 * (d_ir + rgb_to_luminance(d_vi))
            mse_avg = 0.5 * (float(torch.mean((average - c_ir) ** 2))
                             + float(torch.mean((average - c_y) ** 2)))
            present = torch.from_numpy(degraded.label.present_mask()).to(device).bool()
            predicted = out.degradation_logits[0].sigmoid() >= 0.5
            kinds = degraded.label.present()
            restored = {}
            if any(kind.startswith("ir_") for kind in kinds):
                restored["psnr_restored_ir"] = _psnr(out.restored_ir, c_ir)
            if any(kind.startswith("vi_") for kind in kinds):
                restored["psnr_restored_vi"] = _psnr(out.restored_vi, c_vi)
            values = {
                **restored,
                "psnr_fused": 10 * math.log10(1 / max(mse, 1e-12)),
                "psnr_average_degraded": 10 * math.log10(1 / max(mse_avg, 1e-12)),
                "degradation_type_accuracy": float((predicted == present).float().mean()),
                "degradation_image_accuracy": float(bool((predicted == present).all())),
                "severity_mae": float((out.degradation_severity[0] - torch.from_numpy(
                    degraded.label.vector()).to(device)).abs().mean()),
            }
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
    model.train(was_training)
    assert len(DEGRADATION_TYPES) == len(model.config.degradation_types)
    return {key: value / counts[key] for key, value in sums.items()}


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
class CsvLog:
    """Append rows to a CSV file, writing the header when the file is new (resume-safe).

    A file written by a version with other columns (a run resumed after an upgrade added a loss
    term) is rewritten once with the union of both headers, old rows keeping their values.
    """

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, list(columns)
        if not path.exists():
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(columns)
            return
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            existing, rows = list(reader.fieldnames or []), list(reader)
        if existing != self.columns:
            self.columns += [column for column in existing if column not in self.columns]
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, self.columns, restval="")
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row: Mapping[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_format(row.get(column, "")) for column in self.columns])


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


TRAIN_COLUMNS = ["step", "stage", "epoch", "lr", "loss", "l1", "gradient", "presence", "severity",
                 "intensity", "ssim", "fidelity_l1", "fidelity_l2", "correlation", "overshoot", "edge_transfer",
                 "information", "balance",
                 "seconds_per_step", "elapsed_s"]
VAL_COLUMNS = ["step", "stage", "psnr_restored_ir", "psnr_restored_vi", "psnr_fused", "psnr_average_degraded",
               "degradation_type_accuracy", "degradation_image_accuracy", "severity_mae"]


def _unwrap(model: nn.Module) -> MexFusionNet:
    return model.module if isinstance(model, DistributedDataParallel) else model  # type: ignore[return-value]


#: Model configuration fields that only shape the fusion stage: a stage-1 file may differ in them.
FUSION_ONLY_FIELDS = ("fusion_output", "pyramid_levels", "fusion_moe", "fusion_num_experts", "fusion_top_k",
                      "fusion_decoder_blocks")


def load_restoration_modules(model: MexFusionNet, path: str | os.PathLike[str]) -> None:
    """Copy the stage-1 (restoration) modules of a weights file into ``model``.

    The file may be a run's ``stage1.pt`` or a final weights file (stage 2 leaves the restoration
    modules as stage 1 made them), and may differ from ``model`` in the fusion-only fields, so a new
    fusion design can be trained on an existing restoration stage. ``ValueError`` names a mismatch.
    """
    source, _ = load_weights(path)
    ours = {k: v for k, v in model.config.to_dict().items() if k not in FUSION_ONLY_FIELDS and k != "name"}
    theirs = {k: v for k, v in source.config.to_dict().items() if k not in FUSION_ONLY_FIELDS and k != "name"}
    differences = sorted(k for k in ours if ours[k] != theirs.get(k))
    if differences:
        raise ValueError(f"{path}: its restoration modules have another configuration ({', '.join(differences)})")
    for target, origin in zip(model.stage_modules("restoration"), source.stage_modules("restoration")):
        target.load_state_dict(origin.state_dict())


def scene_training_images(count: int, seeds: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` clean (ir, vi) frames of the demo scene: ``seeds`` scenes, evenly from day to dusk."""
    from mex_fusion_ros.bag.scene import DemoScene, SceneConfig

    if count <= 0:
        return []
    per_scene = -(-count // seeds)
    images = []
    for seed in range(seeds):
        # Seeds other than the demo's (0) keep the demo sequence itself out of training.
        scene = DemoScene(SceneConfig(num_frames=max(2, per_scene), seed=1000 + seed))
        for index in range(per_scene):
            if len(images) == count:
                break
            frame = scene.render(index)
            images.append((frame.ir, frame.vi))
    return images


def train(config: TrainConfig, out_dir: str | os.PathLike[str], *, resume: bool = False,
          progress: bool = True, command: str = "", from_stage1: str | os.PathLike[str] | None = None,
          init: str | os.PathLike[str] | None = None) -> Path:
    """Run (or resume) both stages; returns the path of the final weights file in ``out_dir``.

    ``from_stage1``: a ``stage1.pt`` of an earlier run (same model configuration): its restoration
    modules are taken as they are and only stage 2 runs, so the fusion stage can be re-tuned (loss
    weights, schedule) without repeating the restoration stage. ``init``: a weights file of the same
    configuration whose every module starts the run (fine-tuning both stages on new data, with the
    schedule of the configuration).
    """
    from tqdm import tqdm

    from mex_fusion_ros.data.training import DegradedCropDataset

    out_dir = Path(out_dir)
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    context = init_distributed(device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    checkpoint_path = out_dir / "last.pt"
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if resume and not checkpoint_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {checkpoint_path}")
    if not resume and checkpoint_path.exists():
        raise FileExistsError(f"{out_dir} already holds a run ({checkpoint_path}); "
                              "use --resume or another --out")
    if resume and (from_stage1 is not None or init is not None):
        raise ValueError("--from-stage1 and --init start a new run; they cannot be combined with --resume")
    if from_stage1 is not None and init is not None:
        raise ValueError("choose one of --from-stage1 (train stage 2 only) and --init (start both stages)")

    seed = config.seed + context.rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = create_model(config.model, **config.model_overrides).to(device)
    total_steps = config.restoration.steps + config.fusion.steps
    step, epoch, elapsed_before = 0, 0, 0.0
    checkpoint: dict[str, Any] | None = None
    if resume:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if checkpoint["model_config"] != model.config.to_dict():
            raise ValueError(f"{checkpoint_path} was made with another model configuration; cannot resume")
        model.load_state_dict(checkpoint["model"])
        step, epoch = checkpoint["step"], checkpoint["epoch"]
        elapsed_before = checkpoint.get("elapsed_s", 0.0)
        _set_rng_state(checkpoint["rng"])
    elif init is not None:
        initial, _ = load_weights(init, expected=model.config)
        model.load_state_dict(initial.state_dict())
    elif from_stage1 is not None:
        load_restoration_modules(model, from_stage1)
        step = config.restoration.steps
        epoch = step * config.restoration.batch_size // max(1, config.data.samples_per_epoch)

    data = config.data
    pairs, pair_weights = training_pairs(data)
    scene = scene_training_images(data.scene_frames)
    dataset = DegradedCropDataset(pairs, crop_size=data.crop_size, seed=config.seed,
                                  samples_per_epoch=data.samples_per_epoch, extra_images=scene,
                                  pair_weights=(*pair_weights, *[1.0] * len(scene)) if data.train_weights else None,
                                  rescale=tuple(data.rescale) if data.rescale else None,
                                  camera_variation=CameraVariation(p=data.camera_variation)
                                  if data.camera_variation > 0 else None,
                                  input_bits=data.input_bits)
    train_log = CsvLog(out_dir / "train.csv", TRAIN_COLUMNS) if context.is_main else None
    val_log = CsvLog(out_dir / "val.csv", VAL_COLUMNS) if context.is_main and config.data.val else None
    if context.is_main:
        with (out_dir / "config.yaml").open("w") as handle:
            yaml.safe_dump(train_config_to_dict(config), handle, sort_keys=False)

    started = time.monotonic()
    last_checkpoint = started

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - started

    def save_checkpoint(stage: str, optimizer: torch.optim.Optimizer) -> None:
        if not context.is_main:
            return
        temporary = checkpoint_path.with_name("last.pt.tmp")
        torch.save({"model_config": model.config.to_dict(), "model": _unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(), "stage": stage, "step": step, "epoch": epoch,
                    "elapsed_s": elapsed(), "rng": _rng_state(),
                    "train_config": train_config_to_dict(config)},
                   temporary)
        os.replace(temporary, checkpoint_path)

    def run_validation(stage: str) -> dict[str, float]:
        if not (context.is_main and config.data.val):
            return {}
        metrics = validate(_unwrap(model), config, device)
        assert val_log is not None
        val_log.write({"step": step, "stage": stage, **metrics})
        return metrics

    bar = tqdm(total=total_steps, initial=step, disable=not (progress and context.is_main), unit="step",
               file=sys.stderr, dynamic_ncols=True)
    metrics: dict[str, float] = {}
    for stage_index, stage in enumerate(STAGES):
        stage_config: StageConfig = getattr(config, stage)
        stage_start = sum(getattr(config, s).steps for s in STAGES[:stage_index])
        stage_end = stage_start + stage_config.steps
        if step >= stage_end:
            continue
        parameters = configure_stage(model, stage)
        optimizer = torch.optim.AdamW(parameters, lr=stage_config.lr, weight_decay=stage_config.weight_decay)
        if checkpoint is not None and checkpoint["stage"] == stage and step > stage_start:
            optimizer.load_state_dict(checkpoint["optimizer"])
        trained: nn.Module = model
        if context.enabled:
            # Sparse experts leave some parameters unused in a step: find_unused_parameters.
            device_ids = [device.index] if device.type == "cuda" else None
            trained = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
        sampler = DistributedSampler(dataset, shuffle=False) if context.enabled else None
        loader = DataLoader(dataset, batch_size=stage_config.batch_size, sampler=sampler, shuffle=False,
                            num_workers=config.data.workers, drop_last=True,
                            persistent_workers=False, pin_memory=device.type == "cuda")
        batches = _cycle(loader, epoch)
        bar.set_description(stage)
        step_timer = time.monotonic()
        while step < stage_end:
            epoch, batch = next(batches)
            lr = learning_rate(stage_config, step - stage_start)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, terms, _ = compute_losses(trained, batch, stage, config.loss, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loss_value = float(loss.detach())
            if stage_config.grad_clip > 0:
                nn.utils.clip_grad_norm_(parameters, stage_config.grad_clip)
            optimizer.step()
            step += 1
            bar.update(1)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step} ({stage}); terms {terms}")
            if train_log is not None and (step % config.log_every == 0 or step == stage_end):
                seconds = (time.monotonic() - step_timer) / config.log_every
                step_timer = time.monotonic()
                train_log.write({"step": step, "stage": stage, "epoch": epoch, "lr": lr, "loss": loss_value,
                                 **terms, "seconds_per_step": seconds, "elapsed_s": elapsed()})
                bar.set_postfix(loss=f"{loss_value:.4f}")
            if config.validation.every > 0 and step % config.validation.every == 0 and step != stage_end:
                metrics = run_validation(stage)
            if time.monotonic() - last_checkpoint >= config.checkpoint_minutes * 60:
                save_checkpoint(stage, optimizer)
                last_checkpoint = time.monotonic()
        metrics = run_validation(stage)
        save_checkpoint(stage, optimizer)
        last_checkpoint = time.monotonic()
        if context.is_main and stage == "restoration":
            save_weights(out_dir / "stage1.pt", _unwrap(model), {"stage": "restoration", "step": step})
        checkpoint = None
    bar.close()
    final = out_dir / weights_file_name(config.model)
    if context.is_main:
        # The final file is always written, also when a resumed run had nothing left to do.
        if not metrics:
            metrics = run_validation("fusion")
        save_weights(final, _unwrap(model), {
            "data": describe_training_data(config.data), "command": command,
            "steps": {s: getattr(config, s).steps for s in STAGES},
            "train_seconds": round(elapsed(), 1), "world_size": context.world_size,
            **({"from_stage1": str(from_stage1)} if from_stage1 is not None else {}),
            **({"init": str(init)} if init is not None else {}),
            "distributed": context.enabled,
            "train_config": train_config_to_dict(config), "validation": metrics,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        if config.data.calibration_every:
            calibrate_presence(final, _unwrap(model), config.data, progress=progress)
    if context.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return final
