"""Export of the network (deploy.export, ``mex-fusion export``): routing rewrite, ONNX and TorchScript parity.

A tiny configuration (the nano architecture with small widths and few levels) keeps every export to
a few seconds; its parameters are perturbed away from the zero-initialised heads and gates, so the
outputs and the expert choices depend on the input and a broken export cannot pass by accident.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mex_fusion_ros.cli import main
from mex_fusion_ros.deploy.export import (
    ExportError,
    check_parity,
    export_onnx,
    gate_names,
    onnx_expert_conv_groups,
    onnx_session,
    read_onnx_metadata,
    run_onnx,
    with_gathered_routing,
)
from mex_fusion_ros.model import create_model
from mex_fusion_ros.model.network import MexFusionNet
from mex_fusion_ros.model.weights import save_weights

TINY = dict(widths=(8, 16, 16), encoder_blocks=(0, 1, 1), decoder_blocks=(0, 1), fusion_decoder_blocks=(0, 1),
            heads=(1, 1, 1), moe_levels=(0, 1), num_experts=3, top_k=2, fusion_num_experts=3, fusion_top_k=1,
            prompt_width=8, pyramid_levels=4)


def tiny_model(seed: int = 0, **overrides: object) -> MexFusionNet:
    """Tiny nano-architecture network with every parameter perturbed (non-trivial heads and gates)."""
    torch.manual_seed(seed)
    model = create_model("nano", **{**TINY, **overrides}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


@pytest.fixture(scope="module")
def model() -> MexFusionNet:
    return tiny_model()


@pytest.fixture(scope="module")
def exported(model: MexFusionNet, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(model, path, size=(32, 48))


def test_gathered_routing_equals_sparse_moe(model: MexFusionNet) -> None:
    ir, vi = torch.rand(1, 1, 48, 80), torch.rand(1, 3, 48, 80)
    with torch.inference_mode():
        eager, gathered = model(ir, vi), with_gathered_routing(model)(ir, vi)
    assert torch.allclose(eager.fused, gathered.fused, atol=1e-5)
    assert torch.allclose(eager.restored_vi, gathered.restored_vi, atol=1e-5)
    for a, b in zip(eager.routing, gathered.routing, strict=True):
        assert a.gate == b.gate and torch.equal(a.indices, b.indices)
        assert torch.allclose(a.weights, b.weights, atol=1e-6)
    # Different inputs route differently somewhere, or the comparison above proved little.
    other = with_gathered_routing(model)(torch.zeros(1, 1, 48, 80), torch.ones(1, 3, 48, 80))
    assert any(not torch.equal(a.weights, b.weights) for a, b in zip(gathered.routing, other.routing))


def test_onnx_export_parity_and_dynamic_size(model: MexFusionNet, exported) -> None:
    assert exported.dynamic_hw, exported.notes
    parity = exported.parity
    # Both parity inputs at the export size and at a second size (dynamic axes), every output.
    assert len(parity.max_abs) == 4
    assert parity.worst() <= 1e-3, parity.to_dict()
    assert all(parity.routing_equal.values()), parity.routing_equal
    for per_input in parity.max_abs.values():
        assert {f"{gate}.weights" for gate in gate_names(model.config)} <= set(per_input)
        assert max(per_input.values()) <= 1e-3
    # A third size, never seen by the exporter, through a fresh session.
    session = onnx_session(exported.path)
    again = check_parity(model, lambda a, b: run_onnx(session, a, b), (64, 32), seed=5)
    assert again.worst() <= 1e-3 and all(again.routing_equal.values())


def test_onnx_metadata_names_config_and_outputs(model: MexFusionNet, exported) -> None:
    metadata = read_onnx_metadata(exported.path)
    assert metadata["config"] == model.config.to_dict()
    assert metadata["stride"] == model.config.stride
    session = onnx_session(exported.path)
    assert [o.name for o in session.get_outputs()] == metadata["outputs"]
    assert metadata["outputs"][:4] == ["fused", "fused_luminance", "restored_ir", "restored_vi"]


def test_exported_graph_runs_only_top_k_experts(model: MexFusionNet, exported) -> None:
    """The gathered expert convolutions have k routes per image, not N: the saving survives export."""
    config = model.config
    expected = []
    for level in config.moe_levels:  # encoder batch = 2 (infrared and visible of one pair)
        expected += [2 * config.top_k * config.widths[level], 2 * config.top_k, 2 * config.top_k]
    expected += [config.fusion_top_k * config.widths[-1], config.fusion_top_k, config.fusion_top_k]
    assert sorted(onnx_expert_conv_groups(exported.path)) == sorted(expected)
    assert config.top_k < config.num_experts and config.fusion_top_k < config.fusion_num_experts


def test_export_rejects_size_not_multiple_of_stride(model: MexFusionNet, tmp_path) -> None:
    with pytest.raises(ExportError, match="stride 16"):
        export_onnx(model, tmp_path / "x.onnx", size=(30, 48))


def test_read_onnx_metadata_rejects_foreign_file(tmp_path) -> None:
    path = tmp_path / "foreign.onnx"
    path.write_bytes(b"not an onnx file")
    with pytest.raises(ExportError, match="foreign.onnx"):
        read_onnx_metadata(path)


def test_export_cli_torchscript_parity(model: MexFusionNet, tmp_path, capsys) -> None:
    weights = save_weights(tmp_path / "tiny.pt", model)
    out = tmp_path / "tiny.ts"
    code = main(["export", "--weights", str(weights), "--format", "torchscript", "--size", "32", "48",
                 "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["parity_ok"], report
    assert report["parity"]["worst_image_output"] <= 1e-3
    assert all(report["parity"]["routing_equal"].values())
    # The traced file alone reproduces the eager model at a size other than the example's.
    loaded = torch.jit.load(str(out))
    ir, vi = torch.rand(1, 1, 48, 64), torch.rand(1, 3, 48, 64)
    with torch.inference_mode():
        fused = loaded(ir, vi)[0]
        reference = model(ir, vi).fused
    np.testing.assert_allclose(fused.numpy(), reference.numpy(), atol=1e-4)


def test_export_cli_reports_bad_weights(tmp_path, capsys) -> None:
    code = main(["export", "--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.onnx")])
    assert code == 2
    assert "missing.pt" in capsys.readouterr().err
