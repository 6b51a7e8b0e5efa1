"""One way to build any fuser from a short text spec: the ROS node, ``mex-fusion eval`` and the
rosbag replay all call ``create_fuser``, so they share one inference path.

Specs:

- a classical baseline: ``average``, ``max``, ``laplacian``, ``gff``, ``cascade``;
- a model configuration with its shipped weights: ``nano``, ``small``, ``paper``;
- a configuration with a weights file: ``nano:path/to/weights.pt``;
- a weights file alone: ``path/to/weights.pt`` (the file records its configuration);
- an exported network (``mex-fusion export``): ``path/to/model.onnx`` (onnxruntime/tensorrt backends).

Network fusers run on a ``backend`` (``torch``, ``onnxruntime``, ``tensorrt``; ``mex_fusion_ros.deploy.backends``).

The network code (torch) is imported only when a model spec is used, so the baselines stay light.
"""
from __future__ import annotations

from pathlib import Path

from mex_fusion_ros.fusion.base import ImageFuser
from mex_fusion_ros.fusion.classical import CLASSICAL_FUSERS

#: The classical baselines, in the order reports list them.
CLASSICAL_METHODS: tuple[str, ...] = ("average", "max", "laplacian", "gff", "cascade")

#: Model configurations that ship weights (``mex_fusion_ros.model.weights``).
MODEL_CONFIGS: tuple[str, ...] = ("nano", "small", "paper")

WEIGHTS_SUFFIX = ".pt"
ONNX_SUFFIX = ".onnx"


def valid_specs_text() -> str:
    """Human-readable list of accepted specs, for error messages and ``--help``."""
    return (
        f"classical: {', '.join(CLASSICAL_METHODS)}; model: {', '.join(MODEL_CONFIGS)} "
        f"(shipped weights), NAME:path/to/weights{WEIGHTS_SUFFIX}, or path/to/weights{WEIGHTS_SUFFIX}"
    )


def parse_model_spec(spec: str) -> tuple[str | None, Path | None]:
    """``(config name or None, weights path or None)`` of a model spec; ``ValueError`` if it is not one.

    ``"nano"`` -> ``("nano", None)`` (shipped weights); ``"nano:w.pt"`` -> ``("nano", Path("w.pt"))``;
    ``"w.pt"`` -> ``(None, Path("w.pt"))``.
    """
    name, separator, path = spec.partition(":")
    if separator and name in MODEL_CONFIGS:
        if not path.endswith(WEIGHTS_SUFFIX):
            raise ValueError(f"fuser spec {spec!r}: weights file must end in {WEIGHTS_SUFFIX}")
        return name, Path(path)
    if spec.endswith(WEIGHTS_SUFFIX):
        return None, Path(spec)
    if spec in MODEL_CONFIGS:
        return spec, None
    raise ValueError(f"unknown fuser {spec!r}; valid: {valid_specs_text()}")


def parse_fuser_spec(spec: str) -> tuple[str | None, Path | None]:
    """What ``spec`` names, loading nothing: ``(None, None)`` for a classical baseline, else
    ``(config name or None, weights or .onnx path or None)``; ``ValueError`` listing the valid forms.

    ``create_fuser`` builds from this, and the parameter validator (``mex_fusion_ros.config``)
    checks ``method`` with it, so a spec the validator accepts is one the node can parse.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"fuser spec must be a non-empty string, got {spec!r}; valid: {valid_specs_text()}")
    spec = spec.strip()
    if spec in CLASSICAL_METHODS:
        return None, None
    if spec.endswith(ONNX_SUFFIX):
        # "nano:model.onnx" (the node's method + weights) or "model.onnx"; the file records its configuration.
        prefix, separator, rest = spec.partition(":")
        return None, Path(rest if separator and prefix in MODEL_CONFIGS else spec)
    return parse_model_spec(spec)


def create_fuser(spec: str, *, device: str = "auto", half: bool = False, backend: str = "torch",
                 torch_compile: bool = False, cuda_graphs: bool = False) -> ImageFuser:
    """Build the fuser named by ``spec`` (see the module docstring).

    ``device`` ("auto", "cpu", "cuda", "cuda:1", ...) and ``half`` (fp16 inference) apply to the
    network only; the classical baselines run on the CPU with numpy/OpenCV and ignore them, as they
    ignore ``backend`` (torch, onnxruntime, tensorrt), ``torch_compile`` and ``cuda_graphs`` (torch
    backend, fixed input sizes); see ``mex_fusion_ros.deploy.backends.create_network_fuser``. A missing
    runtime raises ``deploy.backends.BackendUnavailableError`` (an ``ImportError``) listing what is installed.
    Raises ``ValueError`` for an unknown spec (listing the valid ones) or a missing weights file;
    errors of loading the network (``model.weights.WeightsError``: corrupt file, no shipped weights,
    configuration mismatch) pass through unchanged.
    """
    name, path = parse_fuser_spec(spec)
    if name is None and path is None:
        return CLASSICAL_FUSERS[spec.strip()]()
    if path is not None and not path.is_file():
        raise ValueError(f"fuser {spec!r}: weights file {path} does not exist")
    # Lazy imports: torch and the network load only for model specs.
    from mex_fusion_ros.deploy.backends import create_network_fuser

    if path is None:
        from mex_fusion_ros.model.weights import shipped_weights_path

        path = Path(shipped_weights_path(name))
    # With a configuration name, the file must hold that configuration (WeightsError otherwise).
    return create_network_fuser(path, expected=name, device=device, half=half, backend=backend,
                                torch_compile=torch_compile, cuda_graphs=cuda_graphs)
