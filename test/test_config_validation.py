"""One parameter validator for `mex-fusion config`, `run`, `bag eval` and the nodes' start-up.

Before, `mex-fusion config` called files valid that the node then refused (NaN, a bad homography,
a misspelt method, an integer for a float), the node ignored unknown keys, and five kinds of file
ended in a traceback. Each test here failed then. The node tests start a real FusionNode with
the file as rcl hands it over (``--params-file``); the fuzz tests feed the validator arbitrary
bytes, text and structures, and allow nothing but ``ConfigError``.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mex_fusion_ros.cli import main as cli_main
from mex_fusion_ros.config import (
    NODE_PARAMETERS,
    ConfigError,
    check_parameters_files,
    load_config,
    rcl_scalar,
    read_parameters_file,
    validate_start_up,
)

IDENTITY = "[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]"


def params_file(tmp_path: Path, body: str, node: str = "fusion_node", name: str = "params.yaml") -> Path:
    """A parameters file whose ``node`` section holds ``body`` (YAML lines, indented here)."""
    text = f"{node}:\n  ros__parameters:\n" + "".join(f"    {line}\n" for line in body.splitlines())
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------------
# What `mex-fusion config` called valid and the node refused
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "key", "reason"), [
    ("sync:\n  slop: .nan", "sync.slop", "finite"),
    ("sync:\n  thermal_offset: -.inf", "sync.thermal_offset", "finite"),
    ("camera_timeout: nan", "camera_timeout", "finite"),
    ("registration:\n  homography: [1.0, 0.0, 0.0, 0.0, .nan, 0.0, 0.0, 0.0, 1.0]",
     "registration.homography[4]", "finite"),
    ("registration:\n  homography: [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]",
     "registration.homography", "singular"),
    ("registration:\n  homography: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]",
     "registration.homography", "9 values"),
    ("method: laplacain", "method", "unknown fuser 'laplacain'"),
    ("method: nano:weights.bin", "method", "must end in .pt"),
    ("method: ''", "method", "non-empty"),
    ("method: nano\nweights: weights.bin", "weights", "must end in .pt"),
    ("sync:\n  slpo: 0.1", "sync.slpo", "did you mean sync.slop"),
    ("registration:\n  homography: [1.0, 0, 0, 0, 1, 0, 0, 0, 1]", "registration.homography", "write 0.0 for 0"),
    ("sync:\n  queue_size: 99999999999999999999", "sync.queue_size", "expected int, got float"),
    ("device: gpu", "device", "'gpu' is not a device"),
])
def test_the_validator_refuses_what_the_node_refuses(tmp_path, capsys, body, key, reason):
    path = params_file(tmp_path, body)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.key_path.endswith(f"fusion_node.ros__parameters.{key}")
    assert reason in raised.value.reason
    assert cli_main(["config", str(path)]) == 1
    line = _one_line_error(capsys)
    assert str(path) in line and f"fusion_node.ros__parameters.{key}" in line and reason in line


def test_integers_are_accepted_for_floats_and_become_floats(tmp_path):
    path = params_file(tmp_path, "sync:\n  slop: 1\nregistration:\n  homography: [2, 0, 0, 0, 2, 0, 0, 0, 1]\n"
                                 "agc:\n  smoothing: 0")
    config = load_config(path)["fusion_node"]
    assert config["sync.slop"] == 1.0 and isinstance(config["sync.slop"], float)
    assert config["registration.homography"] == [2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0]
    assert all(isinstance(v, float) for v in config["registration.homography"])


@pytest.mark.parametrize("make", [
    lambda d: (d / "latin1.yaml", "fusion_node:\n  ros__parameters:\n    method: caf\xe9\n".encode("latin-1")),
    lambda d: (d / "binary.yaml", bytes(range(256)) * 4),
    lambda d: (d / "syntax.yaml", b"fusion_node:\n  ros__parameters:\n    method: [laplacian\n"),
    lambda d: (d / "empty_section.yaml", b"fusion_node:\n  ros__parameters:\n"),
    lambda d: (d / "tabs.yaml", b"fusion_node:\n\tros__parameters: {}\n"),
    lambda d: (d / "alias.yaml", b"fusion_node:\n  ros__parameters:\n    sync:\n      slop: &s 0.1\n"
                                 b"      thermal_offset: *s\n"),
    lambda d: (d / "no_value.yaml", b"fusion_node:\n  ros__parameters:\n    method:\n"),
    lambda d: (d / "two_documents.yaml", b"fusion_node: {}\n---\ndetector_node: {}\n"),
    lambda d: (d, None),  # a directory
])
def test_files_rcl_cannot_read_are_one_line_naming_the_file(tmp_path, capsys, make):
    path, data = make(tmp_path)
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.source == str(path) or raised.value.key_path == str(path)
    assert cli_main(["config", str(path)]) == 1
    assert str(path) in _one_line_error(capsys)
    # The node executables check --params-file before rcl parses it (rcl's error is a traceback).
    from mex_fusion_ros.nodes.fusion_node import main as fusion_node_main

    assert fusion_node_main(["fusion_node", "--ros-args", "--params-file", str(path)]) == 1
    line = _one_line_error(capsys)
    assert line.startswith("fusion_node: ") and str(path) in line


def test_run_and_bag_eval_use_the_same_validator(tmp_path, capsys):
    path = params_file(tmp_path, "sync:\n  slop: .nan")
    assert cli_main(["run", "--config", str(path), "--duration", "0.1"]) == 1
    assert "fusion_node.ros__parameters.sync.slop: expected a finite number" in _one_line_error(capsys)
    assert cli_main(["bag", "eval", str(tmp_path / "no_bag"), "--config", str(path)]) == 1
    assert "fusion_node.ros__parameters.sync.slop: expected a finite number" in _one_line_error(capsys)
    good = params_file(tmp_path, "method: laplacian", name="good.yaml")
    assert cli_main(["bag", "eval", str(tmp_path / "no_bag"), "--config", str(good), "--slop", "nan"]) == 1
    assert "sync.slop: expected a finite number" in _one_line_error(capsys)


def test_start_up_files_may_hold_other_nodes_and_wildcards(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text("camera_driver:\n  ros__parameters:\n    exposure: 3\n"
                    "/**:\n  ros__parameters:\n    use_sim_time: true\n    conf: 0.5\n"
                    "robot1:\n  fusion_node:\n    ros__parameters:\n      method: laplacian\n")
    check_parameters_files("fusion_node", ["fusion_node", "--ros-args", "--params-file", str(path)])
    path.write_text("robot1:\n  fusion_node:\n    ros__parameters:\n      method: laplacain\n")
    with pytest.raises(ConfigError, match=r"robot1/fusion_node\.ros__parameters\.method: unknown fuser"):
        check_parameters_files("fusion_node", ["x", "--ros-args", "--params-file", str(path)])


def test_start_up_values_refuse_unknown_keys_and_turn_integers_into_floats():
    specs = NODE_PARAMETERS["fusion_node"]
    checked = validate_start_up(specs, {"sync.slop": 1, "use_sim_time": True, "conf": 0.5, "classes": None},
                                "fusion_node")
    assert checked == {"sync.slop": 1.0, "use_sim_time": True}
    with pytest.raises(ConfigError, match=r"fusion_node\.ros__parameters\.sync\.slpo: unknown parameter"):
        validate_start_up(specs, {"sync.slpo": 0.1}, "fusion_node")


# ------------------------------------------------------------------------------------------------
# The node agrees: real FusionNode, the file handed over by rcl
# ------------------------------------------------------------------------------------------------
def _start_fusion_node(path: Path):
    from node_harness import ros_context

    from mex_fusion_ros.nodes.fusion_node import FusionNode

    with ros_context() as context:
        node = FusionNode("fusion_node", context=context, cli_args=["--ros-args", "--params-file", str(path)])
        try:
            return dict(node.params)
        finally:
            node.destroy_node()


@pytest.mark.ros
def test_the_node_accepts_integers_for_floats_like_the_validator(tmp_path):
    path = params_file(tmp_path, "method: laplacian\ndevice: cpu\nsync:\n  slop: 1\nregistration:\n"
                                 "  homography: [2, 0, 0, 0, 2, 0, 0, 0, 1]")
    params = _start_fusion_node(path)
    assert params["sync.slop"] == 1.0 and isinstance(params["sync.slop"], float)
    assert params["registration.homography"] == [2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0]
    assert load_config(path)["fusion_node"]["sync.slop"] == params["sync.slop"]


@pytest.mark.ros
@pytest.mark.parametrize(("body", "match"), [
    ("method: laplacian\nsync:\n  slpo: 0.1", r"sync\.slpo: unknown parameter of fusion_node; did you mean"),
    ("method: laplacian\nmystery: 3", r"mystery: unknown parameter of fusion_node"),
    ("method: laplacian\nqos_overrides:\n  /fused/image:\n    publisher:\n      depth: 5",
     r"qos_overrides\./fused/image\.publisher\.depth: unknown parameter"),
    ("method: laplacian\nsync:\n  slop: .nan", r"sync\.slop: expected a finite number"),
    ("method: laplacain", r"method: unknown fuser 'laplacain'"),
])
def test_the_node_refuses_at_start_up_what_the_validator_refuses(tmp_path, body, match):
    from mex_fusion_ros.nodes.fusion_node import FusionNodeError
    from mex_fusion_ros.nodes.params import ParameterSpecError

    path = params_file(tmp_path, body)
    with pytest.raises(ConfigError):
        load_config(path)
    with pytest.raises((ParameterSpecError, FusionNodeError), match=match):
        _start_fusion_node(path)


# ------------------------------------------------------------------------------------------------
# rcl's scalar typing, checked against rcl itself
# ------------------------------------------------------------------------------------------------
_SCALAR_TEXT = st.one_of(
    st.sampled_from(["y", "n", "yes", "No", "ON", "off", "True", "1_000", "2024-01-01", "1:30", "~", "null",
                     "010", "08", "0x1F", "0x", "+5", "-0", ".5", "5.", "1e3", "1E-2", "1e400", "nan", "NaN",
                     ".nan", ".Inf", "-.inf", "inf", "-Infinity", "99999999999999999999", "0x1p3", "1.5e+3",
                     "9223372036854775807", "-9223372036854775808", "9223372036854775808", "abc"]),
    st.from_regex(r"[+-]?[0-9]{1,3}(\.[0-9]{0,2})?([eE][+-]?[0-9]{1,2})?", fullmatch=True),
    st.from_regex(r"[+-]?0[xX]?[0-9a-fA-F]{0,4}", fullmatch=True),
)


def _rcl_value(text: str):
    """The value rcl's own parser gives ``text`` (via rclpy: a context initialised with the file)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(f"probe:\n  ros__parameters:\n    value: {text}\n")
    context = Context()
    try:
        rclpy.init(args=["probe", "--ros-args", "--params-file", handle.name], context=context)
        node = Node("probe", context=context)
        try:
            return node._parameter_overrides["value"].value
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        os.unlink(handle.name)


@pytest.mark.ros
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SCALAR_TEXT)
def test_plain_scalars_are_typed_as_rcl_types_them(text):
    node = yaml.compose(f"value: {text}")
    if not isinstance(node.value[0][1], yaml.ScalarNode) or node.value[0][1].style is not None:
        return  # not a plain scalar in YAML
    ours, theirs = rcl_scalar(text), _rcl_value(text)
    assert type(ours) is type(theirs), (text, ours, theirs)
    if isinstance(ours, float) and math.isnan(ours):
        assert math.isnan(theirs)
    else:
        assert ours == theirs, (text, ours, theirs)


# ------------------------------------------------------------------------------------------------
# Fuzz: nothing but ConfigError, whatever the file or structure
# ------------------------------------------------------------------------------------------------
_VALID_FILE = (Path(__file__).resolve().parent.parent / "config" / "fusion.yaml").read_bytes()

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                     st.binary(max_size=8), st.dates())
_KEYS = st.one_of(st.sampled_from(["fusion_node", "detector_node", "/**", "ros__parameters", "sync", "slop",
                                   "registration", "homography", "method", "classes", "use_sim_time"]),
                  st.text(max_size=8), st.integers(), st.none())
_STRUCTURES = st.recursive(_SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(_KEYS, children, max_size=5)), max_leaves=25)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with a few bytes replaced, inserted or cut."""
    def mutate(draw_ops: list[tuple[int, int, bytes]]) -> bytes:
        out = bytearray(data)
        for kind, position, payload in draw_ops:
            position %= max(len(out), 1)
            if kind == 0:
                out[position:position + len(payload)] = payload
            elif kind == 1:
                out[position:position] = payload
            else:
                del out[position:position + len(payload) + 1]
        return bytes(out)

    return st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=6)),
                    min_size=1, max_size=6).map(mutate)


def _only_config_errors(path: Path) -> None:
    for check in (lambda: load_config(path), lambda: read_parameters_file(path),
                  lambda: check_parameters_files("fusion_node", ["x", "--ros-args", "--params-file", str(path)]),
                  lambda: check_parameters_files("detector_node", ["x", "--ros-args", "--params-file", str(path)])):
        try:
            check()
        except ConfigError as error:
            assert "\n" not in str(error)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), _mutations(_VALID_FILE),
                      st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_fuzz_bytes_raise_only_config_errors(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    _only_config_errors(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_STRUCTURES)
def test_fuzz_yaml_structures_raise_only_config_errors(tmp_path, document):
    path = tmp_path / "fuzz.yaml"
    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except yaml.YAMLError:
        return
    path.write_text(text)
    _only_config_errors(path)


@settings(max_examples=200, deadline=None)
@given(node=st.sampled_from(sorted(NODE_PARAMETERS)), values=st.dictionaries(_KEYS, _STRUCTURES, max_size=6),
       overrides=st.one_of(_STRUCTURES, st.dictionaries(st.sampled_from(sorted(NODE_PARAMETERS)),
                                                        st.dictionaries(_KEYS, _STRUCTURES, max_size=4))))
def test_fuzz_values_and_overrides_raise_only_config_errors(node, values, overrides):
    with contextlib.suppress(ConfigError):
        validate_start_up(NODE_PARAMETERS[node], {k: v for k, v in values.items() if isinstance(k, str)}, node)
    with contextlib.suppress(ConfigError):
        load_config(None, overrides=overrides)
