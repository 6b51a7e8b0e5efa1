"""launch/fusion.launch.py and ``mex-fusion run`` describe the same graph.

``launch``/``launch_ros`` are not installable here, so the launch file is checked statically (it
takes its arguments, nodes, executables, parameters and remappings from ``nodes.graph``) and, where
``launch_ros`` is importable, built and evaluated for real. The launcher side is checked by
starting its nodes with rclpy and reading back their names, namespaces, parameters and topics.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from node_harness import ros_context

from mex_fusion_ros.config import ConfigError, default_parameters, load_config, source_config_dir
from mex_fusion_ros.nodes.graph import (
    GRAPH,
    LAUNCH_ARGUMENTS,
    RGB_IMAGE,
    THERMAL_IMAGE,
    launch_parameters,
    resolve_graph,
)

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "fusion.launch.py"
SHIPPED = source_config_dir() / "fusion.yaml"


def console_scripts() -> dict[str, str]:
    namespace: dict = {}
    source = (REPO / "setup.py").read_text()
    start = source.index("CONSOLE_SCRIPTS = [")
    exec(source[start:source.index("]", start) + 1], namespace)  # the list literal only
    return {name.strip(): target.strip() for name, target in
            (entry.split("=") for entry in namespace["CONSOLE_SCRIPTS"])}


def test_every_graph_node_is_an_executable_running_its_class_module():
    scripts = console_scripts()
    for node in GRAPH:
        module = node.node_class.partition(":")[0]
        assert scripts[node.executable] == f"{module}:main"
        assert node.load_class().__name__ == node.node_class.partition(":")[2]


def test_launch_file_takes_everything_from_the_graph_module():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {alias.name for stmt in ast.walk(tree) if isinstance(stmt, ast.ImportFrom)
                and stmt.module == "mex_fusion_ros.nodes.graph" for alias in stmt.names}
    assert {"LAUNCH_ARGUMENTS", "resolve_graph", "launch_parameters"} <= imported
    calls = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert {"DeclareLaunchArgument", "Node", "OpaqueFunction", "resolve_graph", "launch_parameters"} <= calls
    node_call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                     and isinstance(node.func, ast.Name) and node.func.id == "Node")
    keywords = {keyword.arg for keyword in node_call.keywords}
    assert {"package", "executable", "name", "namespace", "parameters", "remappings"} <= keywords
    # Nothing in the launch file names a node, executable, topic or parameter by itself.
    strings = {node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    for node in GRAPH:
        assert node.executable not in strings
    assert THERMAL_IMAGE not in strings and RGB_IMAGE not in strings
    assert "get_package_share_directory" in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def test_default_graph_is_the_parameters_file():
    resolved = resolve_graph({"config": str(SHIPPED)})
    config = load_config(SHIPPED)
    assert [node.name for node in resolved] == [node.name for node in GRAPH]
    for node in resolved:
        # use_sim_time is always passed (launch argument default "false"); the rest is the file.
        assert node.parameters.pop("use_sim_time") is False
        assert node.parameters == config[node.name] == default_parameters(node.name)
        assert node.namespace == "" and node.remappings == ()


def test_arguments_become_parameters_and_remaps(tmp_path):
    resolved = {node.name: node for node in resolve_graph({
        "config": str(SHIPPED), "method": "laplacian", "device": "cpu", "model": "yolov8n.yaml",
        "use_sim_time": "true", "namespace": "/robot1/", "thermal_topic": "/boson/image_raw",
        "fused_topic": "fused"})}
    fusion, detector = resolved["fusion_node"], resolved["detector_node"]
    assert fusion.parameters["method"] == "laplacian" and fusion.parameters["device"] == "cpu"
    assert detector.parameters["model"] == "yolov8n.yaml" and detector.parameters["device"] == "cpu"
    assert fusion.parameters["use_sim_time"] is True and detector.parameters["use_sim_time"] is True
    assert fusion.namespace == detector.namespace == "robot1"
    assert (THERMAL_IMAGE, "/boson/image_raw") in fusion.remappings
    assert (THERMAL_IMAGE + "/compressed", "/boson/image_raw/compressed") in fusion.remappings
    assert ("fused/image", "fused") in fusion.remappings and ("fused/image", "fused") in detector.remappings
    # Booleans in either spelling ROS users write (use_sim_time:=True is common in tutorials).
    assert all(node.parameters["use_sim_time"] is True
               for node in resolve_graph({"config": str(SHIPPED), "use_sim_time": "True"}))
    assert resolve_graph({"config": str(SHIPPED), "reliable": "False"})[0].parameters["input.reliable"] is False
    # An argument left empty keeps the file's value.
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump({"fusion_node": {"ros__parameters": {"method": "gff"}}}))
    assert resolve_graph({"config": str(custom)})[0].parameters["method"] == "gff"
    assert resolve_graph({"config": str(custom), "method": ""})[0].parameters["method"] == "gff"


TOPIC_NAMES = st.from_regex(r"/?[a-z][a-z0-9_]{0,8}(/[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True)


@given(thermal=TOPIC_NAMES, rgb=TOPIC_NAMES, sim=st.sampled_from(["true", "false", "True", "False"]),
       reliable=st.sampled_from(["", "true", "false", "True", "False"]),
       namespace=st.sampled_from(["", "robot1", "/a/b/"]))
@settings(max_examples=40, deadline=None)
def test_any_valid_arguments_resolve_consistently(thermal, rgb, sim, reliable, namespace):
    resolved = resolve_graph({"config": str(SHIPPED), "thermal_topic": thermal, "rgb_topic": rgb,
                              "use_sim_time": sim, "reliable": reliable, "namespace": namespace})
    fusion = resolved[0]
    remaps = dict(fusion.remappings)
    for topic, target in ((THERMAL_IMAGE, thermal), (RGB_IMAGE, rgb)):
        assert remaps.get(topic, topic) == target  # no rule when the name is unchanged
        assert remaps.get(topic + "/compressed", topic + "/compressed") == target + "/compressed"
    assert all(node.parameters["use_sim_time"] is (sim.lower() == "true") for node in resolved)
    file_value = default_parameters("fusion_node")["input.reliable"]  # an empty argument keeps it
    expected_reliable = reliable.lower() == "true" if reliable else file_value
    assert fusion.parameters["input.reliable"] is expected_reliable
    assert all(node.namespace == namespace.strip("/") for node in resolved)


@pytest.mark.parametrize(("arguments", "key"), [
    ({"use_sim_time": "maybe"}, "use_sim_time"),
    ({"reliable": "yes please"}, "reliable"),
    ({"no_such_argument": "1"}, "no_such_argument"),
    ({"device": "cpu", "config": "/nonexistent/params.yaml"}, "/nonexistent/params.yaml"),
])
def test_bad_arguments_name_the_argument(arguments, key):
    with pytest.raises(ConfigError) as raised:
        resolve_graph(arguments)
    assert key in str(raised.value)


def test_launch_parameters_leave_out_only_empty_defaults():
    detector = resolve_graph({"config": str(SHIPPED)})[1]
    parameters = launch_parameters(detector)
    assert "classes" not in parameters  # [] is the declared default; rcl cannot type an empty YAML list
    assert {name: value for name, value in detector.parameters.items() if name != "classes"} == parameters


@pytest.mark.ros
def test_the_launcher_starts_the_described_nodes(tmp_path):
    from mex_fusion_ros.nodes.run_command import build_nodes

    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"device": "cpu"}},
                                      "fusion_node": {"ros__parameters": {"method": "laplacian"}},
                                      "detector_node": {"ros__parameters": {"model": "yolov8n.yaml",
                                                                            "image_size": 64}}}))
    resolved = resolve_graph({"config": str(config), "namespace": "robot1", "rgb_topic": "/camera/color"})
    with ros_context() as context:
        nodes = build_nodes(resolved, context=context)
        try:
            for node, entry in zip(nodes, resolved):
                assert node.get_name() == entry.name and node.get_namespace() == "/robot1"
                for name, value in entry.parameters.items():
                    actual = node.get_parameter(name).value
                    if isinstance(value, list):
                        actual = list(actual)  # array parameters come back as array.array
                    assert actual == value, name
            topics = {subscription.topic_name for subscription in nodes[0].subscriptions}
            assert {"/robot1/thermal/image_raw", "/camera/color"} <= topics
            detector_topics = {subscription.topic_name for subscription in nodes[1].subscriptions}
            assert detector_topics == {"/robot1/fused/image"}
        finally:
            for node in nodes:
                node.destroy_node()


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installable from PyPI here; the launch file is checked "
                           "statically")
def test_launch_description_builds_the_same_nodes():
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("fusion_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [entity for entity in description.entities if isinstance(entity, DeclareLaunchArgument)]
    assert [argument.name for argument in declared] == [argument.name for argument in LAUNCH_ARGUMENTS]
    arguments = {"config": str(SHIPPED), "namespace": "robot1", "thermal_topic": "/boson/image_raw",
                 "fused_topic": "fused", "method": "laplacian", "use_sim_time": "true"}
    context = LaunchContext()
    context.launch_configurations.update({argument.name: argument.default for argument in LAUNCH_ARGUMENTS})
    context.launch_configurations.update(arguments)
    opaque = next(entity for entity in description.entities if isinstance(entity, OpaqueFunction))
    nodes = opaque.execute(context)
    resolved = resolve_graph(arguments)
    assert [node.node_executable for node in nodes] == [entry.executable for entry in resolved]
    assert [node.node_package for node in nodes] == [entry.package for entry in resolved]
    for node, entry in zip(nodes, resolved):
        # What Node.execute() hands the process (--ros-args -r __node:= -r __ns:= --params-file -r ...),
        # without starting it; _perform_substitutions is the same private step in Humble to Rolling.
        node._perform_substitutions(context)
        assert node.node_name == f"/robot1/{entry.name}" and node.expanded_node_namespace == "/robot1"
        assert node.expanded_remapping_rules == list(entry.remappings)
        (params_file, is_file), = node._Node__expanded_parameter_arguments
        assert is_file
        # launch_ros writes sequences as !!python/tuple, which rcl's parser reads as arrays.
        written_file = yaml.load(Path(params_file).read_text(), Loader=yaml.FullLoader)
        os.unlink(params_file)
        assert list(written_file) == [node.node_name]  # keyed by the namespaced name, so it applies
        written = written_file[node.node_name]["ros__parameters"]
        written = {name: list(value) if isinstance(value, tuple) else value for name, value in written.items()}
        assert written == launch_parameters(entry)
        assert all(type(written[name]) is type(value) for name, value in launch_parameters(entry).items())
    assert (THERMAL_IMAGE, "/boson/image_raw") in nodes[0].expanded_remapping_rules
    assert nodes[1].expanded_remapping_rules == [("fused/image", "fused")]


def run_cli(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, YOLO_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "mex_fusion_ros.cli", "run", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.mark.ros
def test_mex_fusion_run_starts_and_stops_cleanly(tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({"detector_node": {"ros__parameters": {"model": "yolov8n.yaml",
                                                                            "image_size": 64}}}))
    done = run_cli("--config", str(config), "--method", "laplacian", "--device", "cpu", "--duration", "2")
    assert done.returncode == 0, done.stderr
    missing = run_cli("--config", str(config), "--method", "nano", "--weights", str(tmp_path / "absent.pt"))
    assert missing.returncode == 1 and "`weights`" in missing.stderr


def test_node_executables_print_help_without_starting_ros():
    for node in GRAPH:
        module = node.node_class.partition(":")[0]
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert f"ros2 run mex_fusion_ros {node.executable}" in done.stdout and "--ros-args" in done.stdout


def test_docs_cover_every_parameter_and_launch_argument():
    from mex_fusion_ros.config import NODE_PARAMETERS

    text = (REPO / "docs" / "nodes.md").read_text()
    for specs in NODE_PARAMETERS.values():
        for spec in specs:
            assert f"`{spec.name}`" in text, f"docs/nodes.md does not document parameter {spec.name}"
    for argument in LAUNCH_ARGUMENTS:
        assert f"`{argument.name}`" in text, f"docs/nodes.md does not document argument {argument.name}"
