"""Inference backends behind the ``ImageFuser`` protocol: ONNX Runtime, TensorRT, accelerated torch.

Every backend here is a subclass of the torch :class:`~mex_fusion_ros.model.fuser.Fuser` that only
replaces :meth:`Fuser.infer`: the pre-processing (checks, grey -> 3 channels, batching), the
post-processing (clipping, colour/grey output, degradation estimate, routing per image) and the
timings are the torch fuser's own code, so all backends return identical ``FusionResult`` layouts.
The exported graphs take H and W in multiples of the network's stride; ``infer`` pads with the
network's ``pad_to_multiple`` and crops back, exactly as ``MexFusionNet.forward`` does.

- ``torch``: :class:`Fuser` (eager, sparse routing) or, with ``compile``/``cuda_graphs``,
  :class:`AcceleratedTorchFuser` (gathered routing, ``torch.compile`` with static shapes, CUDA-graph
  replay per input size);
- ``onnxruntime``: :class:`OnnxRuntimeFuser` on an exported ``.onnx`` (CPU or CUDA provider);
- ``tensorrt``: :class:`TensorRTFuser` on a serialized engine built with ``trtexec`` on the target.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mex_fusion_ros.model.calibration import CalibrationError, validate_thresholds
from mex_fusion_ros.model.config import ModelConfig
from mex_fusion_ros.model.fuser import Fuser, select_device
from mex_fusion_ros.model.network import GateDecision, ModelOutput, pad_to_multiple

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
#: Python distributions reported by :func:`installed_runtimes` (name shown -> distribution names).
_RUNTIME_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxscript": ("onnxscript",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
    "torch_tensorrt": ("torch-tensorrt", "torch_tensorrt"),
}
_INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA); on Jetson the JetPack wheel",
    "tensorrt": "TensorRT ships with JetPack; on x86 pip install tensorrt matching the CUDA version",
}


class BackendUnavailableError(ImportError):
    """A backend's runtime is not installed, or cannot run on the requested device; says what is."""


def installed_runtimes() -> dict[str, str | None]:
    """Version of every inference runtime this module can use (None = not installed)."""
    versions: dict[str, str | None] = {}
    for shown, distributions in _RUNTIME_DISTRIBUTIONS.items():
        versions[shown] = None
        for distribution in distributions:
            try:
                versions[shown] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def installed_text() -> str:
    """``"torch 2.15.0, onnx 1.23.2, onnxruntime 1.32.0, tensorrt not installed, ..."``."""
    return ", ".join(f"{name} {version}" if version else f"{name} not installed"
                     for name, version in installed_runtimes().items())


def require_module(module: str, backend: str) -> Any:
    """Import ``module`` for ``backend`` or raise :class:`BackendUnavailableError` listing what is installed."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        hint = _INSTALL_HINTS.get(module, f"pip install {module}")
        raise BackendUnavailableError(
            f"backend {backend!r} needs the Python module {module!r} ({hint}); it cannot be imported "
            f"({error}). Installed: {installed_text()}") from None


# ----------------------------------------------------------------------------------------------
# Shared: an exported-graph fuser reuses the torch Fuser's pre/post-processing.
# ----------------------------------------------------------------------------------------------
class _ExportedGraphFuser(Fuser):
    """Base of the fusers that run an exported graph: replaces only :meth:`infer`.

    ``Fuser.__init__`` is not called: it would move a torch model onto the device, and these fusers
    have none. The attributes the inherited pre/post-processing reads are set here instead.
    """

    def __init__(self, config: ModelConfig, gates: list[str], *, device: torch.device, graph_half: bool,
                 name: str, metadata: dict[str, Any] | None = None) -> None:
        self.device = device
        # Tensors handed to the inherited _to_batch/_results stay float32; the graph's own precision
        # is graph_half (inputs are cast right before the graph runs).
        self.half = False
        self.graph_half = graph_half
        self.memory_format = torch.contiguous_format
        self.config = config
        self.gates = list(gates)
        self.name = name
        self.metadata = dict(metadata or {})
        self.presence_thresholds = validate_thresholds(self.metadata.get("presence_thresholds", {}),
                                                       config.degradation_types)
        self.weights_path = None

    def _run_graph(self, ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
        """One padded pair ``(1, 1, H, W)``, ``(1, 3, H, W)`` -> the graph outputs in export order."""
        raise NotImplementedError

    @torch.inference_mode()
    def infer(self, ir: torch.Tensor, vi: torch.Tensor) -> ModelOutput:
        """Same contract as :meth:`Fuser.infer`; the graph has batch 1, so pairs run one by one."""
        height, width = ir.shape[-2:]
        stride = self.config.stride
        per_pair = []
        for index in range(ir.shape[0]):
            ir_p = pad_to_multiple(ir[index:index + 1].float(), stride)
            vi_p = pad_to_multiple(vi[index:index + 1].float(), stride)
            per_pair.append(self._run_graph(ir_p, vi_p))
        columns = [torch.cat(values, dim=0) for values in zip(*per_pair)]
        fused, fused_y, restored_ir, restored_vi, logits, severity = columns[:6]
        routing = [GateDecision(gate, columns[6 + 2 * i].long(), columns[7 + 2 * i].float())
                   for i, gate in enumerate(self.gates)]

        def crop(t: torch.Tensor) -> torch.Tensor:
            return t[..., :height, :width].float()

        zero = torch.zeros(())
        return ModelOutput(restored_ir=crop(restored_ir), restored_vi=crop(restored_vi),
                           degradation_logits=logits.float(), degradation_severity=severity.float(),
                           routing=routing, balance_loss=zero, encoder_balance_loss=zero,
                           fused=crop(fused), fused_luminance=crop(fused_y))


def _config_from_metadata(metadata: dict[str, Any], source: Path) -> tuple[ModelConfig, list[str]]:
    from mex_fusion_ros.deploy.export import ExportError

    try:
        config, gates = ModelConfig.from_dict(metadata["config"]), list(metadata["gates"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{source}: export metadata lacks a valid model configuration: {error}") from None
    try:
        validate_thresholds(metadata.get("presence_thresholds", {}), config.degradation_types)
    except CalibrationError as error:
        raise ExportError(f"{source}: export metadata: {error}") from None
    return config, gates


# ----------------------------------------------------------------------------------------------
# ONNX Runtime
# ----------------------------------------------------------------------------------------------
class OnnxRuntimeFuser(_ExportedGraphFuser):
    """An ONNX file written by :func:`~mex_fusion_ros.deploy.export.export_onnx`, run by ONNX Runtime.

    ``device``: ``cpu`` (CPUExecutionProvider) or ``cuda[:N]`` (CUDAExecutionProvider, which must be
    available in the installed onnxruntime build). ``threads``: intra-op threads; 0 = torch's
    ``get_num_threads()``, so ``torch.set_num_threads`` (``mex-fusion bench --threads``) governs both.
    """

    def __init__(self, path: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                 threads: int = 0, name: str | None = None) -> None:
        from mex_fusion_ros.deploy.export import onnx_session, read_onnx_metadata

        ort = require_module("onnxruntime", "onnxruntime")
        path = Path(path)
        metadata = read_onnx_metadata(path)
        config, gates = _config_from_metadata(metadata, path)
        resolved = select_device(device)
        available = ort.get_available_providers()
        if resolved.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError(
                    f"backend 'onnxruntime' on {resolved}: this onnxruntime build has no CUDAExecutionProvider "
                    f"(providers: {', '.join(available)}); install onnxruntime-gpu. Installed: {installed_text()}")
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": resolved.index or 0}),
                                    "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        super().__init__(config, gates, device=resolved, graph_half=bool(metadata.get("half")),
                         name=name or f"{config.name}-onnxruntime", metadata=metadata)
        self.onnx_path = path
        self.session = onnx_session(path, providers, threads or torch.get_num_threads())
        # infer() reads the outputs by position: ask for them in the export order, by name.
        self.output_order = list(metadata["outputs"])

    def _run_graph(self, ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
        dtype = np.float16 if self.graph_half else np.float32
        feeds = {"ir": ir.cpu().numpy().astype(dtype), "vi": vi.cpu().numpy().astype(dtype)}
        return [torch.from_numpy(np.asarray(value)) for value in self.session.run(self.output_order, feeds)]


# ----------------------------------------------------------------------------------------------
# TensorRT (engine file built on the target with trtexec; see docs/deployment.md)
# ----------------------------------------------------------------------------------------------
class TensorRTFuser(_ExportedGraphFuser):
    """A serialized TensorRT engine (``trtexec --onnx=X.onnx --saveEngine=X.engine``), run with the
    ``tensorrt`` Python API on CUDA tensors owned by torch.

    ``onnx_path``: the ONNX file the engine was built from (it carries the export metadata: model
    configuration, gate names, precision); ``engine_path`` defaults to it with the suffix ``.engine``.
    """

    def __init__(self, onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str] | None = None,
                 *, device: str | torch.device = "cuda", name: str | None = None) -> None:
        from mex_fusion_ros.deploy.export import read_onnx_metadata

        trt = require_module("tensorrt", "tensorrt")
        resolved = select_device(device)
        if resolved.type != "cuda":
            raise BackendUnavailableError(f"backend 'tensorrt' needs a CUDA device, got {resolved}")
        onnx_path = Path(onnx_path)
        engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
        if not engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine {engine_path} does not exist; build it on this machine with "
                                    f"trtexec --onnx={onnx_path} --saveEngine={engine_path} (docs/deployment.md)")
        metadata = read_onnx_metadata(onnx_path)
        config, gates = _config_from_metadata(metadata, onnx_path)
        super().__init__(config, gates, device=resolved, graph_half=bool(metadata.get("half")),
                         name=name or f"{config.name}-tensorrt", metadata=metadata)
        self.trt = trt
        self.output_order = list(metadata["outputs"])
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {engine_path} (built with another TensorRT "
                               f"version or GPU? rebuild it on this machine)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=resolved)
        self._torch_dtypes = {trt.float32: torch.float32, trt.float16: torch.float16,
                              trt.int32: torch.int32, trt.int64: torch.int64}

    def _run_graph(self, ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
        dtype = torch.float16 if self.graph_half else torch.float32
        inputs = {"ir": ir.to(self.device, dtype).contiguous(), "vi": vi.to(self.device, dtype).contiguous()}
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_order:
            shape = tuple(self.context.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=self._torch_dtypes[self.engine.get_tensor_dtype(name)],
                                 device=self.device)
            self.context.set_tensor_address(name, tensor.data_ptr())
            outputs[name] = tensor
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution failed for input {tuple(ir.shape)}")
        self.stream.synchronize()
        return [outputs[name] for name in self.output_order]


# ----------------------------------------------------------------------------------------------
# torch: compile and CUDA graphs (fixed input sizes)
# ----------------------------------------------------------------------------------------------
class AcceleratedTorchFuser(Fuser):
    """The torch fuser on the gathered-routing network, optionally compiled and/or CUDA-graph replayed.

    ``torch.compile`` (``fullgraph=True, dynamic=False``) recompiles per input size; CUDA graphs
    are captured per input size on first use (after warm-up) and replayed with static input
    buffers: the gathered routing has no host synchronisation, so the whole forward is one graph.
    Meant for cameras of fixed resolution; every new size costs one compile/capture.
    """

    def __init__(self, fuser: Fuser, *, torch_compile: bool = False, cuda_graphs: bool = False,
                 warmup: int = 3) -> None:
        from mex_fusion_ros.deploy.export import with_gathered_routing

        if cuda_graphs and fuser.device.type != "cuda":
            raise BackendUnavailableError(f"cuda_graphs needs a CUDA device, the fuser runs on {fuser.device}")
        model = with_gathered_routing(fuser.model.float())
        super().__init__(model, device=fuser.device, half=fuser.half, name=fuser.name, metadata=fuser.metadata)
        self.weights_path = fuser.weights_path
        # Gathered routing runs grouped convolutions; channels-last buys nothing there.
        self.memory_format = torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.torch_compile = torch_compile
        self.cuda_graphs = cuda_graphs
        self.warmup = warmup
        self.forward: Callable[..., ModelOutput] = self.model
        if torch_compile:
            self.forward = torch.compile(self.model, fullgraph=True, dynamic=False)
        self._graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, torch.Tensor, ModelOutput]] = {}

    def _capture(self, ir: torch.Tensor, vi: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor, ModelOutput]:
        static_ir, static_vi = ir.clone(), vi.clone()
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # compile / autotune / allocate before capturing
                self.forward(static_ir, static_vi)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.forward(static_ir, static_vi)
        return graph, static_ir, static_vi, static_out

    @torch.inference_mode()
    def infer(self, ir: torch.Tensor, vi: torch.Tensor) -> ModelOutput:
        dtype = torch.float16 if self.half else torch.float32
        ir = ir.to(self.device, dtype).contiguous()
        vi = vi.to(self.device, dtype).contiguous()
        if not self.cuda_graphs:
            return self.forward(ir, vi)
        key = (*ir.shape, *vi.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(ir, vi)
        graph, static_ir, static_vi, static_out = self._graphs[key]
        static_ir.copy_(ir)
        static_vi.copy_(vi)
        graph.replay()
        # The outputs live in the graph's memory and are overwritten by the next replay; the
        # inherited post-processing copies them to the host before that can happen.
        return static_out


# ----------------------------------------------------------------------------------------------
# Construction from a weights file (create_fuser) and the ONNX cache
# ----------------------------------------------------------------------------------------------
def onnx_cache_dir() -> Path:
    """Where ONNX files exported on the fly are kept (``$MEX_FUSION_CACHE`` or ``~/.cache/mex_fusion_ros/onnx``)."""
    explicit = os.environ.get("MEX_FUSION_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mex_fusion_ros" / "onnx"


def cached_onnx(weights: str | os.PathLike[str], *, half: bool = False, expected: str | None = None) -> Path:
    """The ONNX export of a weights file, exported on first use and reused while the file is unchanged.

    The cache key is the SHA-1 of the weights file and the precision, so retrained weights never
    meet a stale graph. The parity check runs at export time and a failing one raises ``ExportError``.
    """
    from mex_fusion_ros.deploy.export import ExportError, export_onnx
    from mex_fusion_ros.model.weights import load_weights

    weights = Path(weights)
    # Loaded first, so a wrong configuration or a corrupt file fails before anything is cached.
    model, metadata = load_weights(weights, expected=expected)
    digest = hashlib.sha1(weights.read_bytes()).hexdigest()[:16]
    target = onnx_cache_dir() / f"{weights.stem}-{digest}-{'fp16' if half else 'fp32'}.onnx"
    if target.is_file():
        return target
    stride = model.config.stride
    size = (max(stride, 2 * stride), max(stride, 3 * stride))
    partial = target.with_name(target.name + ".partial")
    result = export_onnx(model, partial, size=size, half=half, source=str(weights),
                         presence_thresholds=metadata.get("presence_thresholds"))
    assert result.parity is not None
    worst = result.parity.worst()
    tolerance = 5e-2 if half else 1e-3
    if worst > tolerance or not all(result.parity.routing_equal.values()):
        raise ExportError(f"ONNX export of {weights} failed its parity check (max abs {worst:.2e}, routing "
                          f"equal {result.parity.routing_equal}); not using it. Untrained weights (zero gates) "
                          f"tie all experts, and ONNX Runtime breaks ties differently from torch")
    os.replace(partial, target)
    return target


def create_network_fuser(weights: str | os.PathLike[str], *, expected: str | None = None, device: str = "auto",
                         half: bool = False, backend: str = "torch", torch_compile: bool = False,
                         cuda_graphs: bool = False) -> Fuser:
    """A network fuser for ``weights`` (``.pt`` weights file or an exported ``.onnx``) on ``backend``.

    ``half``: fp16 (CUDA only for torch; for onnxruntime/tensorrt it selects an fp16 graph).
    ``torch_compile``/``cuda_graphs``: torch backend only (``ValueError`` otherwise).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend != "torch" and (torch_compile or cuda_graphs):
        raise ValueError(f"compile/cuda_graphs apply to the torch backend only, not to {backend!r}")
    path = Path(weights)
    if path.suffix == ".onnx":
        if backend == "torch":
            raise ValueError(f"{path} is an ONNX file: use backend onnxruntime or tensorrt, or give the .pt weights")
        if backend == "onnxruntime":
            return OnnxRuntimeFuser(path, device="cpu" if device == "auto" and not _ort_has_cuda() else device)
        return TensorRTFuser(path, device="cuda" if device == "auto" else device)
    if backend == "onnxruntime":
        require_module("onnxruntime", backend)
        require_module("onnxscript", backend)  # the on-the-fly export needs it
        onnx_path = cached_onnx(path, half=half, expected=expected)
        return OnnxRuntimeFuser(onnx_path, device="cpu" if device == "auto" and not _ort_has_cuda() else device)
    if backend == "tensorrt":
        require_module("tensorrt", backend)
        # The engine is built on the target from the cached ONNX (docs/deployment.md); its absence is
        # reported by TensorRTFuser with the trtexec command line.
        onnx_path = cached_onnx(path, half=half, expected=expected)
        return TensorRTFuser(onnx_path, device="cuda" if device == "auto" else device)
    fuser = Fuser.from_weights(path, device=device, half=half, expected=expected)
    if torch_compile or cuda_graphs:
        return AcceleratedTorchFuser(fuser, torch_compile=torch_compile, cuda_graphs=cuda_graphs)
    return fuser


def _ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()
