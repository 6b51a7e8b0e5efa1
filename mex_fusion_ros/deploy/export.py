"""Export the network to ONNX or TorchScript with its sparse top-k routing intact.

Why the training ``SparseMoE`` cannot be exported as is: it groups the batch by expert with
``nonzero()`` and skips experts nobody chose with a Python ``if`` -- data-dependent control flow
that a traced or exported graph freezes to the routing of the example input (tracing) or rejects
(``torch.export``). Exporting every expert and multiplying the unchosen ones by zero would keep the
outputs but lose the compute saving.

:class:`GatheredMoE` is the same layer rewritten with static shapes and data-dependent *data*
instead of data-dependent *control*: the gate's top-k indices ``(B, k)`` select the chosen experts'
weights from stacked weight tensors with ``index_select`` (ONNX ``Gather``), and the k chosen
experts of every image run together as grouped convolutions (``groups = B * k * C`` for the
depthwise 3x3, ``B * k`` for the 1x1 expansion/projection) whose weights are those gathered
tensors. The graph therefore contains exactly k expert evaluations per image, whatever k and N are:
the FLOPs scale with ``k / N`` like the eager model. The routing outputs (expert indices and gate
weights per gate) are graph outputs, so the node can still publish them.

Shapes: the batch is fixed at export time (1 pair: the node fuses one pair at a time; the encoder
sees it as a batch of 2, infrared and visible), height and width are dynamic in multiples of the
network's stride (``ModelConfig.stride``). The runtime pads to that multiple and crops back with the
network's own ``pad_to_multiple`` (see ``deploy.backends``), so the graph never pads.
"""
from __future__ import annotations

import copy
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mex_fusion_ros.model.config import ModelConfig
from mex_fusion_ros.model.moe import MoEOutput, SparseMoE
from mex_fusion_ros.model.network import MexFusionNet

#: Graph input names: infrared ``(1, 1, H, W)`` and visible ``(1, 3, H, W)``, float in [0, 1],
#: H and W multiples of the network's stride.
INPUT_NAMES: tuple[str, str] = ("ir", "vi")
#: Image and degradation outputs, in graph order; routing outputs follow (see :func:`output_names`).
IMAGE_OUTPUTS: tuple[str, ...] = ("fused", "fused_luminance", "restored_ir", "restored_vi",
                                  "degradation_logits", "degradation_severity")
#: Key of the JSON document stored in the ONNX ``metadata_props`` (and TorchScript extra files).
METADATA_KEY = "mex_fusion_ros"
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
DEFAULT_OPSET = 18


class ExportError(RuntimeError):
    """The model cannot be exported or the exported file does not match PyTorch; says why."""


class GatheredMoE(nn.Module):
    """Inference-only :class:`SparseMoE` with static-shape sparse routing (see module docstring).

    Same parameters and same result as the wrapped layer in eval mode (clean gate, no noise):
    ``x (B, C, H, W)``, ``condition (B, D)`` -> :class:`MoEOutput` with ``balance_loss`` 0.
    """

    def __init__(self, moe: SparseMoE) -> None:
        super().__init__()
        self.name = moe.name
        self.num_experts = moe.num_experts
        self.top_k = moe.top_k
        experts = list(moe.experts)
        first = experts[0]
        self.channels = first.depthwise.in_channels
        self.hidden = first.project.in_channels

        def stack(get: Any) -> torch.Tensor:
            # (N, everything else flattened): one index_select gathers the chosen experts, and 2-D
            # buffers are left alone by Module.to(memory_format=...) (the Fuser's channels-last).
            return torch.stack([get(expert).detach().reshape(-1) for expert in experts])

        self.register_buffer("depthwise_weight", stack(lambda e: e.depthwise.weight))  # (N, C*1*3*3)
        self.register_buffer("depthwise_bias", stack(lambda e: e.depthwise.bias))  # (N, C)
        self.register_buffer("expand_weight", stack(lambda e: e.expand.weight))  # (N, 2h*C)
        self.register_buffer("expand_bias", stack(lambda e: e.expand.bias))  # (N, 2h)
        self.register_buffer("project_weight", stack(lambda e: e.project.weight))  # (N, C*h)
        self.register_buffer("project_bias", stack(lambda e: e.project.bias))  # (N, C)
        self.register_buffer("w_gate", moe.w_gate.detach().clone())

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> MoEOutput:
        batch, channels, height, width = x.shape
        k, hidden = self.top_k, self.hidden
        logits = torch.cat((x.mean(dim=(2, 3)), condition), dim=1) @ self.w_gate
        top_values, indices = logits.topk(k, dim=1)
        weights = top_values.softmax(dim=1)
        chosen = indices.reshape(-1)  # (B * k,), image-major
        routes = batch * k
        depthwise_w = self.depthwise_weight.index_select(0, chosen).reshape(routes * channels, 1, 3, 3)
        depthwise_b = self.depthwise_bias.index_select(0, chosen).reshape(routes * channels)
        expand_w = self.expand_weight.index_select(0, chosen).reshape(routes * 2 * hidden, channels, 1, 1)
        expand_b = self.expand_bias.index_select(0, chosen).reshape(routes * 2 * hidden)
        project_w = self.project_weight.index_select(0, chosen).reshape(routes * channels, hidden, 1, 1)
        project_b = self.project_bias.index_select(0, chosen).reshape(routes * channels)
        # Every image once per chosen expert, all routes side by side in the channel axis of one
        # sample, so that each route's grouped-convolution group sees its own expert's weights.
        routed = x.unsqueeze(1).expand(batch, k, channels, height, width).reshape(1, routes * channels,
                                                                                 height, width)
        y = F.conv2d(routed, depthwise_w, depthwise_b, padding=1, groups=routes * channels)
        y = F.conv2d(y, expand_w, expand_b, groups=routes)
        # SimpleGate per route: first half of each route's 2h channels times the second half.
        y = y.reshape(routes, 2, hidden, height, width)
        y = (y[:, 0] * y[:, 1]).reshape(1, routes * hidden, height, width)
        y = F.conv2d(y, project_w, project_b, groups=routes)
        mixed = (y.reshape(batch, k, channels, height, width) * weights.reshape(batch, k, 1, 1, 1)).sum(1)
        return MoEOutput(features=x + mixed, indices=indices, weights=weights, balance_loss=x.new_zeros(()))


def with_gathered_routing(model: MexFusionNet) -> MexFusionNet:
    """A copy of ``model`` (eval mode, contiguous layout) whose gated MoE layers are :class:`GatheredMoE`.

    The original model is left untouched. The copy gives the same outputs (up to float rounding)
    and has no data-dependent control flow, so it can be exported, compiled with
    ``fullgraph=True`` and captured in a CUDA graph.
    """
    deployed = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    for container in (deployed.encoder_moe, deployed.fusion_moe):
        for key in list(container.keys()):
            layer = container[key]
            if isinstance(layer, SparseMoE):
                container[key] = GatheredMoE(layer)
    return deployed


def gate_names(config: ModelConfig) -> list[str]:
    """Gate names in the order ``ModelOutput.routing`` lists them (encoder per modality, then fusion)."""
    names = [f"encoder{level}/{modality}" for level in sorted(config.moe_levels) for modality in ("ir", "vi")]
    return names + [f"fusion_{position}" for position in ("bottleneck", "output") if position in config.fusion_moe]


def output_names(config: ModelConfig) -> list[str]:
    """All graph outputs: :data:`IMAGE_OUTPUTS`, then ``<gate>.indices`` and ``<gate>.weights`` per gate."""
    routing = [f"{gate}.{part}" for gate in gate_names(config) for part in ("indices", "weights")]
    return list(IMAGE_OUTPUTS) + routing


class ExportableFusionNet(nn.Module):
    """Tuple-output front of a :class:`MexFusionNet` with gathered routing, for export.

    ``ir (1, 1, H, W)``, ``vi (1, 3, H, W)`` in [0, 1], H and W multiples of ``config.stride`` ->
    the tensors named by :func:`output_names` (images not clipped, as ``ModelOutput``).
    """

    def __init__(self, model: MexFusionNet) -> None:
        super().__init__()
        self.config = model.config
        self.model = with_gathered_routing(model)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(ir, vi)
        assert output.fused is not None and output.fused_luminance is not None
        routing: list[torch.Tensor] = []
        for decision in output.routing:
            routing += [decision.indices, decision.weights]
        return (output.fused, output.fused_luminance, output.restored_ir, output.restored_vi,
                output.degradation_logits, output.degradation_severity, *routing)


def export_metadata(config: ModelConfig, *, half: bool, dynamic: bool, size: tuple[int, int],
                    source: str | None = None, presence_thresholds: dict[str, float] | None = None
                    ) -> dict[str, Any]:
    """What a runtime needs besides the graph: configuration, stride, names, precision, shapes, and the
    presence thresholds calibrated for the weights (``mex-fusion calibrate``)."""
    return {
        "presence_thresholds": dict(presence_thresholds or {}),
        "config": config.to_dict(),
        "stride": config.stride,
        "inputs": list(INPUT_NAMES),
        "outputs": output_names(config),
        "gates": gate_names(config),
        "half": half,
        "dynamic_hw": dynamic,
        "export_size": list(size),
        "weights": source,
    }


@dataclass
class ParityReport:
    """Largest absolute difference between the exported model and PyTorch, per output and input."""

    #: input name ("random", "structured") -> output name -> max |exported - torch|.
    max_abs: dict[str, dict[str, float]] = field(default_factory=dict)
    #: input name -> True when every gate chose the same experts in both.
    routing_equal: dict[str, bool] = field(default_factory=dict)
    size: tuple[int, int] = (0, 0)

    def worst(self, outputs: tuple[str, ...] = IMAGE_OUTPUTS) -> float:
        return max((d for per_input in self.max_abs.values() for name, d in per_input.items() if name in outputs),
                   default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "max_abs": self.max_abs, "routing_equal": self.routing_equal,
                "worst_image_output": self.worst()}


@dataclass
class ExportResult:
    path: Path
    format: str
    dynamic_hw: bool
    exporter: str
    seconds: float
    parity: ParityReport | None = None
    notes: list[str] = field(default_factory=list)


def check_size(config: ModelConfig, size: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` for the example input: must be positive multiples of the stride."""
    height, width = size
    stride = config.stride
    if height < stride or width < stride or height % stride or width % stride:
        raise ExportError(f"export size {height}x{width} (HxW) must be positive multiples of the "
                          f"{config.name!r} stride {stride}")
    return height, width


def structured_pair(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A "real-looking" pair ``(1, 1, H, W)``, ``(1, 3, H, W)`` in [0, 1]: smooth gradients, a warm
    blob, edges and mild noise, so the degradation estimate and routing see image-like statistics."""
    generator = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys, xs = ys / max(1, height - 1), xs / max(1, width - 1)
    blob = np.exp(-((xs - 0.6) ** 2 + (ys - 0.4) ** 2) / 0.02)
    edges = ((np.floor(xs * 8) + np.floor(ys * 6)) % 2).astype(np.float32)
    ir = 0.25 + 0.5 * blob + 0.1 * ys + 0.03 * generator.standard_normal((height, width))
    vi = np.stack([0.3 + 0.4 * xs + 0.2 * edges, 0.2 + 0.5 * ys + 0.2 * edges, 0.5 - 0.3 * xs + 0.1 * blob])
    vi = vi + 0.02 * generator.standard_normal(vi.shape)
    to_tensor = torch.from_numpy
    return (to_tensor(np.clip(ir, 0, 1).astype(np.float32))[None, None],
            to_tensor(np.clip(vi, 0, 1).astype(np.float32))[None])


def parity_inputs(height: int, width: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The two parity inputs: uniform random in [0, 1] and :func:`structured_pair`."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "random": (torch.rand(1, 1, height, width, generator=generator),
                   torch.rand(1, 3, height, width, generator=generator)),
        "structured": structured_pair(height, width, seed),
    }


def reference_outputs(model: MexFusionNet, ir: torch.Tensor, vi: torch.Tensor) -> dict[str, np.ndarray]:
    """The eager network's (sparse ``SparseMoE``) outputs under the export names, float32 numpy."""
    with torch.inference_mode():
        output = model.float().eval()(ir.float(), vi.float())
    assert output.fused is not None and output.fused_luminance is not None
    values = [output.fused, output.fused_luminance, output.restored_ir, output.restored_vi,
              output.degradation_logits, output.degradation_severity]
    for decision in output.routing:
        values += [decision.indices, decision.weights]
    return {name: value.detach().cpu().numpy() for name, value in zip(output_names(model.config), values)}


def compare_outputs(reference: dict[str, np.ndarray], exported: dict[str, np.ndarray]
                    ) -> tuple[dict[str, float], bool]:
    """Max abs difference per output (float32) and whether all expert indices agree."""
    differences: dict[str, float] = {}
    routing_equal = True
    for name, expected in reference.items():
        if name not in exported:
            raise ExportError(f"exported model lacks the output {name!r}")
        got = exported[name]
        if got.shape != expected.shape:
            raise ExportError(f"output {name!r}: exported shape {got.shape} != torch shape {expected.shape}")
        if name.endswith(".indices"):
            routing_equal &= bool(np.array_equal(got.astype(np.int64), expected.astype(np.int64)))
            continue
        differences[name] = float(np.max(np.abs(got.astype(np.float32) - expected.astype(np.float32))))
    return differences, routing_equal


def onnx_session(path: str | os.PathLike[str], providers: list[str] | None = None, threads: int = 0) -> Any:
    """An ONNX Runtime ``InferenceSession`` for ``path`` (CPU provider unless ``providers`` given)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def run_onnx(session: Any, ir: torch.Tensor, vi: torch.Tensor, half: bool = False) -> dict[str, np.ndarray]:
    """Outputs of an ONNX session for one pair (inputs cast to the graph precision)."""
    dtype = np.float16 if half else np.float32
    feeds = {INPUT_NAMES[0]: ir.cpu().numpy().astype(dtype), INPUT_NAMES[1]: vi.cpu().numpy().astype(dtype)}
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def check_parity(model: MexFusionNet, run_exported: Any, size: tuple[int, int], seed: int = 0) -> ParityReport:
    """Compare ``run_exported(ir, vi) -> {name: array}`` with the eager model on both parity inputs."""
    report = ParityReport(size=size)
    for label, (ir, vi) in parity_inputs(*size, seed=seed).items():
        reference = reference_outputs(model, ir, vi)
        report.max_abs[label], report.routing_equal[label] = compare_outputs(reference, run_exported(ir, vi))
    return report


def _median_dim_to_onnx(values: Any, dim: int, keepdim: bool = False) -> tuple[Any, Any]:
    """ONNX translation of ``aten.median.dim`` (ONNX has no median op; the network's image
    statistics use one): sort with ``TopK(k = n, ascending)`` and take the lower middle element,
    index ``(n - 1) // 2``, which is what torch returns for an even count."""
    from onnxscript import opset18 as op

    axis = op.Constant(value_ints=[dim])
    count = op.Gather(op.Shape(values), axis)
    ordered, order = op.TopK(values, count, axis=dim, largest=0, sorted=1)
    middle = op.Div(op.Sub(count, op.Constant(value_ints=[1])), op.Constant(value_ints=[2]))
    median, index = op.Gather(ordered, middle, axis=dim), op.Gather(order, middle, axis=dim)
    if not keepdim:
        median, index = op.Squeeze(median, axis), op.Squeeze(index, axis)
    return median, index


def _translations() -> dict[Any, Any]:
    return {torch.ops.aten.median.dim: _median_dim_to_onnx}


def _export_onnx(wrapper: ExportableFusionNet, example: tuple[torch.Tensor, torch.Tensor], path: Path,
                 opset: int, dynamic: bool) -> tuple[bool, str, list[str]]:
    """Write ``path``; returns (dynamic H/W achieved, exporter used, notes).

    Tries the ``torch.export`` (dynamo) exporter with H and W as multiples of the stride, then the
    TorchScript-based exporter with dynamic axes, then a fixed-size export; notes say what failed.
    """
    notes: list[str] = []
    names = output_names(wrapper.config)
    stride = wrapper.config.stride
    if dynamic:
        rows = torch.export.Dim("rows", min=1, max=4096 // stride)
        cols = torch.export.Dim("cols", min=1, max=4096 // stride)
        shapes = {"ir": {2: stride * rows, 3: stride * cols}, "vi": {2: stride * rows, 3: stride * cols}}
        try:
            with warnings.catch_warnings():
                # ir and vi share their H/W dimensions on purpose; the exporter says so for each axis.
                warnings.filterwarnings("ignore", message="# The axis name")
                torch.onnx.export(wrapper, example, str(path), input_names=list(INPUT_NAMES), output_names=names,
                                  opset_version=opset, dynamo=True, dynamic_shapes=shapes, external_data=False,
                                  optimize=True, verbose=False, custom_translation_table=_translations())
            return True, "dynamo", notes
        except Exception as error:  # the exporters raise many types; the note keeps the reason
            notes.append(f"dynamo export with dynamic H/W failed: {type(error).__name__}: {str(error)[:300]}")
        axes = {name: {2: "height", 3: "width"} for name in (*INPUT_NAMES, *IMAGE_OUTPUTS[:4])}
        try:
            torch.onnx.export(wrapper, example, str(path), input_names=list(INPUT_NAMES), output_names=names,
                              opset_version=opset, dynamo=False, dynamic_axes=axes)
            return True, "torchscript-onnx", notes
        except Exception as error:  # recorded; the fixed-size export follows
            notes.append(f"TorchScript-based export with dynamic axes failed: {type(error).__name__}: "
                         f"{str(error)[:300]}")
    torch.onnx.export(wrapper, example, str(path), input_names=list(INPUT_NAMES), output_names=names,
                      opset_version=opset, dynamo=True, external_data=False, verbose=False,
                      custom_translation_table=_translations())
    notes.append(f"exported for the fixed size {example[0].shape[-2]}x{example[0].shape[-1]} only")
    return False, "dynamo", notes


def _attach_onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for entry in list(proto.metadata_props):
        if entry.key == METADATA_KEY:
            proto.metadata_props.remove(entry)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The :data:`METADATA_KEY` document of an exported ONNX file (``ExportError`` naming the file)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and others for corrupt files
        raise ExportError(f"ONNX file {path} cannot be read: {error}") from None
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ExportError(f"ONNX file {path} was not written by `mex-fusion export` (no {METADATA_KEY!r} metadata)")


def _prepare_export(model, size, path, half: bool):
    """What both exporters start from: checked size, output folder, the export wrapper in the
    requested precision and a structured example pair."""
    height, width = check_size(model.config, size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableFusionNet(model.float().cpu().eval()).eval()
    dtype = torch.float16 if half else torch.float32
    if half:
        wrapper = wrapper.half()
    ir, vi = structured_pair(height, width)
    return height, width, path, wrapper, dtype, ir, vi


def export_onnx(model: MexFusionNet, path: str | os.PathLike[str], *, size: tuple[int, int] = (256, 320),
                half: bool = False, opset: int = DEFAULT_OPSET, dynamic: bool = True, parity: bool = True,
                source: str | None = None, presence_thresholds: dict[str, float] | None = None) -> ExportResult:
    """Export ``model`` to ONNX at ``path``; ``size`` (H, W) is the example (and, if fixed, the only) size.

    ``half``: fp16 graph (weights and inputs float16); its parity is checked against fp32 PyTorch on
    the CPU, so expect ~1e-2 rather than 1e-3. With ``parity`` the file is run with ONNX Runtime on
    both parity inputs and the report stored in the result.
    """
    height, width, path, wrapper, dtype, ir, vi = _prepare_export(model, size, path, half)
    started = time.perf_counter()
    with torch.no_grad():
        achieved, exporter, notes = _export_onnx(wrapper, (ir.to(dtype), vi.to(dtype)), path, opset, dynamic)
    _attach_onnx_metadata(path, export_metadata(model.config, half=half, dynamic=achieved, size=(height, width),
                                                source=source, presence_thresholds=presence_thresholds))
    result = ExportResult(path, "onnx", achieved, exporter, time.perf_counter() - started, notes=notes)
    if parity:
        try:
            session = onnx_session(path)
            result.parity = check_parity(model, lambda a, b: run_onnx(session, a, b, half), (height, width))
        except Exception as error:  # ONNX Runtime raises its own types (e.g. NOT_IMPLEMENTED)
            if not half:
                raise
            # The CPU provider lacks some fp16 kernels; the graph is meant for a GPU runtime anyway.
            result.notes.append(f"fp16 parity not checked here (ONNX Runtime CPU: {str(error)[:200]}); "
                                f"check it on the target GPU")
            return result
        if achieved:
            # A second size proves the dynamic axes work (and that padding-free multiples are accepted).
            other = (height + model.config.stride, width + 2 * model.config.stride)
            extra = check_parity(model, lambda a, b: run_onnx(session, a, b, half), other, seed=1)
            for label, values in extra.max_abs.items():
                result.parity.max_abs[f"{label}@{other[0]}x{other[1]}"] = values
                result.parity.routing_equal[f"{label}@{other[0]}x{other[1]}"] = extra.routing_equal[label]
    return result


def export_torchscript(model: MexFusionNet, path: str | os.PathLike[str], *, size: tuple[int, int] = (256, 320),
                       half: bool = False, parity: bool = True, source: str | None = None,
                       presence_thresholds: dict[str, float] | None = None) -> ExportResult:
    """Trace the gathered-routing network to TorchScript (``torch.jit.load`` + call with ``(ir, vi)``).

    Tracing records the shape arithmetic symbolically, so H and W stay dynamic (multiples of the
    stride); the export metadata travels as the extra file ``mex_fusion_ros.json``.
    """
    height, width, path, wrapper, dtype, ir, vi = _prepare_export(model, size, path, half)
    started = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        # The shape checks of the network are constant for the traced shapes; that is intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, (ir.to(dtype), vi.to(dtype)), check_trace=False, strict=False)
    metadata = export_metadata(model.config, half=half, dynamic=True, size=(height, width), source=source,
                               presence_thresholds=presence_thresholds)
    torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})
    result = ExportResult(path, "torchscript", True, "torch.jit.trace", time.perf_counter() - started)
    if parity:
        loaded = torch.jit.load(str(path), map_location="cpu")
        names = output_names(model.config)
        if half:
            result.notes.append("fp16 TorchScript parity is not checked on the CPU (no fp16 kernels needed "
                                "here); run it on the target GPU")
            return result

        def run(a: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                return {n: t.float().numpy() if t.is_floating_point() else t.numpy()
                        for n, t in zip(names, loaded(a, b))}

        result.parity = check_parity(model, run, (height, width))
        other = (height + model.config.stride, width + 2 * model.config.stride)
        extra = check_parity(model, run, other, seed=1)
        for label, values in extra.max_abs.items():
            result.parity.max_abs[f"{label}@{other[0]}x{other[1]}"] = values
            result.parity.routing_equal[f"{label}@{other[0]}x{other[1]}"] = extra.routing_equal[label]
    return result


def onnx_expert_conv_groups(path: str | os.PathLike[str]) -> list[int]:
    """``group`` attribute of every grouped Conv in an ONNX file whose weight is not a constant (the
    gathered expert convolutions): proof of how many expert routes the graph evaluates."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    constants = {init.name for init in proto.graph.initializer}
    constants |= {out for node in proto.graph.node if node.op_type == "Constant" for out in node.output}
    groups = []
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] not in constants:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            groups.append(int(attributes.get("group", 1)))
    return groups


def routing_cost(config: ModelConfig, directory: str | os.PathLike[str], *, size: tuple[int, int] = (512, 640),
                 repeats: int = 5, threads: int = 0) -> list[dict[str, Any]]:
    """Does the exported graph keep the top-k saving? ONNX Runtime time per top-k setting.

    Exports ``config`` with every gate at k = 1, at the configured k and at k = N (all experts; the
    dense equivalent), then times each ONNX file with ONNX Runtime on one ``size`` (H, W) pair.
    Weights are freshly initialised (speed does not depend on them); the gates are randomised so
    that routing varies. Returns one dict per setting: top-k values, expert-conv groups, median ms.
    """
    from mex_fusion_ros.deploy.pipeline_bench import randomise_gates

    height, width = check_size(config, size)
    settings = {"k=1": (1, 1), "configured": (config.top_k, config.fusion_top_k),
                "k=N (dense)": (config.num_experts, config.fusion_num_experts)}
    results = []
    ir, vi = structured_pair(height, width)
    for label, (top_k, fusion_top_k) in settings.items():
        model = MexFusionNet(config.replace(top_k=top_k, fusion_top_k=fusion_top_k)).eval()
        randomise_gates(model)
        path = Path(directory) / f"{config.name}_k{top_k}_{fusion_top_k}.onnx"
        export_onnx(model, path, size=(height, width), dynamic=False, parity=False)
        session = onnx_session(path, threads=threads)
        run_onnx(session, ir, vi)  # warm-up: ORT allocates and prepacks on the first run
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            run_onnx(session, ir, vi)
            samples.append((time.perf_counter() - started) * 1e3)
        results.append({"setting": label, "top_k": top_k, "fusion_top_k": fusion_top_k,
                        "num_experts": config.num_experts, "fusion_num_experts": config.fusion_num_experts,
                        "expert_conv_groups": onnx_expert_conv_groups(path),
                        "median_ms": float(np.median(samples)), "min_ms": float(np.min(samples))})
    return results
