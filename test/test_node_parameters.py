"""What ``ros2 param set`` users meet, through the real parameter services (real rclpy):
integers for float parameters, unknown names, resetting the detector's ``classes`` to "all" and a
``device`` this machine does not have.

Requests are built as ``ros2 param set`` builds them: ``1`` is an integer, ``"[]"`` an empty bool
array (ros2param types an empty YAML list as the first array type it tries).
"""
from __future__ import annotations

import pytest
from node_harness import BackgroundExecutor, ros_context, wait_for
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter

from mex_fusion_ros.config import DETECTOR_NODE_PARAMETERS, FUSION_NODE_PARAMETERS
from mex_fusion_ros.nodes import params
from mex_fusion_ros.nodes.detector_node import DetectorNode
from mex_fusion_ros.nodes.fusion_node import FusionNode
from mex_fusion_ros.nodes.params import ParameterSpecError, device_problem, overrides_to_parameters

pytestmark = pytest.mark.ros


def fusion_node(context, **parameters: object) -> FusionNode:
    flat = {"method": "laplacian", "device": "cpu", **parameters}
    return FusionNode("fusion_node", context=context,
                      parameter_overrides=overrides_to_parameters(flat, FUSION_NODE_PARAMETERS))


def detector_node(context, **parameters: object) -> DetectorNode:
    flat = {"model": "yolov8n.yaml", "device": "cpu", "image_size": 64, **parameters}
    return DetectorNode("detector_node", context=context,
                        parameter_overrides=overrides_to_parameters(flat, DETECTOR_NODE_PARAMETERS))


class ParameterCli:
    """``ros2 param set NODE NAME VALUE`` as a client of the node's set_parameters service."""

    def __init__(self, probe: Node, node_name: str) -> None:
        self.client = probe.create_client(SetParameters, f"/{node_name}/set_parameters")

    def set(self, parameter: Parameter, timeout: float = 30.0):
        assert self.client.wait_for_service(timeout_sec=10.0), "no set_parameters service"
        future = self.client.call_async(SetParameters.Request(parameters=[parameter.to_parameter_msg()]))
        assert wait_for(future.done, timeout), "no reply"
        return future.result().results[0]


@pytest.fixture(params=["rclpy here", "rclpy without pre-set callbacks (Humble)"])
def rclpy_generation(request, monkeypatch) -> str:
    """Run on this rclpy as it is, and as Humble's: without ``add_pre_set_parameters_callback``."""
    if request.param.endswith("(Humble)") and hasattr(Node, "add_pre_set_parameters_callback"):
        monkeypatch.delattr(Node, "add_pre_set_parameters_callback")
    return request.param


def test_integers_for_float_parameters_are_accepted_and_type_errors_name_both_types(rclpy_generation):
    with ros_context() as context:
        node = fusion_node(context)
        probe = Node("parameter_cli", context=context)
        cli = ParameterCli(probe, "fusion_node")
        with BackgroundExecutor(context, [node, probe]):
            result = cli.set(Parameter("sync.slop", value=1))  # `ros2 param set /fusion_node sync.slop 1`
            assert result.successful, result.reason
            assert node.synchronizer.slop == 1.0 and isinstance(node.params["sync.slop"], float)
            if hasattr(node, "add_pre_set_parameters_callback"):  # Jazzy+: stored as the double
                stored = node.get_parameter("sync.slop")
                assert stored.type_ == Parameter.Type.DOUBLE and stored.value == 1.0

            # Still range-checked when it arrives as an integer.
            too_large = cli.set(Parameter("sync.slop", value=9))
            assert not too_large.successful and "sync.slop" in too_large.reason
            assert node.synchronizer.slop == 1.0

            text = cli.set(Parameter("sync.slop", value="fast"))
            assert not text.successful
            assert "sync.slop" in text.reason and "float" in text.reason and "str" in text.reason, text.reason
            flag = cli.set(Parameter("fp16", value=1))
            assert not flag.successful and "fp16" in flag.reason and "bool" in flag.reason, flag.reason
            assert node.synchronizer.slop == 1.0 and node.params["fp16"] is False

            # Read-only parameters stay read-only.
            assert not cli.set(Parameter("sync.queue_size", value=3)).successful


def test_an_unknown_parameter_is_refused_naming_it_and_the_closest_names():
    with ros_context() as context:
        node = fusion_node(context)
        probe = Node("parameter_cli", context=context)
        cli = ParameterCli(probe, "fusion_node")
        with BackgroundExecutor(context, [node, probe]):
            result = cli.set(Parameter("sync.slpo", value=0.1))
            assert not result.successful
            assert "sync.slpo" in result.reason and "sync.slop" in result.reason, result.reason
            assert "fusion_node" in result.reason
            assert not node.has_parameter("sync.slpo")
            far = cli.set(Parameter("zzz", value=True))
            assert not far.successful and "zzz" in far.reason and "camera_timeout" in far.reason, far.reason
            assert not node.has_parameter("zzz")


def test_detector_classes_reset_to_all_from_the_command_line(rclpy_generation):
    with ros_context() as context:
        node = detector_node(context, classes=[2, 7])
        probe = Node("parameter_cli", context=context)
        cli = ParameterCli(probe, "detector_node")
        with BackgroundExecutor(context, [node, probe]):
            assert node.detector.classes == [2, 7]
            every = cli.set(Parameter("classes", value=[-1]))  # ros2 param set /detector_node classes "[-1]"
            assert every.successful, every.reason
            assert node.detector.classes == []  # no filter: every class

            assert cli.set(Parameter("classes", value=[0])).successful and node.detector.classes == [0]
            mixed = cli.set(Parameter("classes", value=[-1, 2]))
            assert not mixed.successful and "classes" in mixed.reason and node.detector.classes == [0]
            negative = cli.set(Parameter("classes", value=[-3]))
            assert not negative.successful and "classes" in negative.reason

            # ros2 param set /detector_node classes "[]" sends an empty *bool* array.
            empty = cli.set(Parameter("classes", Parameter.Type.BOOL_ARRAY, []))
            if hasattr(node, "add_pre_set_parameters_callback"):  # Jazzy+: typed before rclpy checks
                assert empty.successful, empty.reason
                assert node.detector.classes == []
            else:  # Humble: rclpy refuses the type; [-1] is the documented way
                assert not empty.successful


@pytest.mark.parametrize(("device", "expected"), [
    ("cuda:7", "available: cpu"),
    ("cuda", "available: cpu"),
    ("gpu", "use auto, cpu, cuda or cuda:N"),
])
def test_a_device_this_machine_lacks_is_refused_at_start_naming_the_devices(device, expected, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with ros_context() as context:
        for make in (fusion_node, detector_node):
            with pytest.raises(ParameterSpecError) as refused:
                make(context, device=device)
            message = str(refused.value)
            assert ".device" in message and repr(device) in message and expected in message, message
            assert "weights" not in message and "model" not in message, message


def test_device_problem_lists_the_gpus_there_are(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_problem("cuda:7") == ("device 'cuda:7': this machine has 2 CUDA devices; "
                                        "available: cpu, cuda:0, cuda:1")
    assert device_problem("cuda:1") is None and device_problem("cuda") is None
    assert device_problem("cpu") is None and device_problem("auto") is None
    assert params.DEVICE_SYNTAX.fullmatch("cuda:12")
