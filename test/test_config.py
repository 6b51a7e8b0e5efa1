"""The configuration schema, the shipped defaults file and the loader's errors."""
from pathlib import Path

import pytest
import yaml

from mex_fusion_ros.cli import main as cli_main
from mex_fusion_ros.config import (
    NODE_PARAMETERS,
    ConfigError,
    default_parameters,
    load_config,
    render_defaults_yaml,
    source_config_dir,
)

SHIPPED = source_config_dir() / "fusion.yaml"


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_shipped_file_is_the_rendered_schema():
    assert SHIPPED.read_text() == render_defaults_yaml(), (
        "config/fusion.yaml is out of date: regenerate it from mex_fusion_ros/config.py"
    )


def test_shipped_file_loads_to_the_schema_defaults():
    config = load_config(SHIPPED)
    for node in NODE_PARAMETERS:
        assert config[node] == default_parameters(node)


def test_every_parameter_is_documented_and_typed():
    for specs in NODE_PARAMETERS.values():
        names = [spec.name for spec in specs]
        assert len(names) == len(set(names))
        for spec in specs:
            assert spec.description.strip()
            assert spec.type_name in {"bool", "int", "float", "str", "int_array", "float_array", "str_array"}
            spec.validate(spec.default, spec.name)  # defaults respect their own ranges and choices


def test_file_overrides_defaults_and_wildcard_applies(tmp_path):
    path = write(tmp_path, {
        "/**": {"ros__parameters": {"use_sim_time": True, "device": "cpu"}},
        "fusion_node": {"ros__parameters": {"sync": {"slop": 0.02}, "fp16": True}},
    })
    config = load_config(path)
    assert config["fusion_node"]["sync.slop"] == 0.02
    assert config["fusion_node"]["fp16"] is True
    assert config["fusion_node"]["device"] == "cpu" and config["detector_node"]["device"] == "cpu"
    assert config["detector_node"]["use_sim_time"] is True


def test_integer_is_accepted_for_float(tmp_path):
    path = write(tmp_path, {"fusion_node": {"ros__parameters": {"sync": {"slop": 1}}}})
    assert load_config(path)["fusion_node"]["sync.slop"] == 1.0


def test_overrides_win_over_file(tmp_path):
    path = write(tmp_path, {"fusion_node": {"ros__parameters": {"fp16": True}}})
    assert load_config(path, overrides={"fusion_node": {"fp16": False}})["fusion_node"]["fp16"] is False


@pytest.mark.parametrize(("document", "key_path"), [
    ({"fusion_node": {"ros__parameters": {"sync": {"slopp": 0.1}}}}, "fusion_node.ros__parameters.sync.slopp"),
    ({"fusion_node": {"ros__parameters": {"sync": {"slop": "fast"}}}}, "fusion_node.ros__parameters.sync.slop"),
    ({"fusion_node": {"ros__parameters": {"fp16": 1}}}, "fusion_node.ros__parameters.fp16"),
    ({"fusion_node": {"ros__parameters": {"sync": {"slop": -1.0}}}}, "fusion_node.ros__parameters.sync.slop"),
    ({"fusion_node": {"ros__parameters": {"sync": {"mode": "fastest"}}}}, "fusion_node.ros__parameters.sync.mode"),
    ({"detector_node": {"ros__parameters": {"classes": ["car"]}}}, "detector_node.ros__parameters.classes[0]"),
    # rcl refuses a list of mixed types; the whole list is named
    ({"detector_node": {"ros__parameters": {"classes": [1, "car"]}}}, "detector_node.ros__parameters.classes"),
    ({"detector_node": {"ros__parameters": {"classes": 3}}}, "detector_node.ros__parameters.classes"),
    ({"mystery_node": {"ros__parameters": {}}}, "mystery_node"),
    ({"fusion_node": {"parameters": {}}}, "fusion_node"),
    ({"/**": {"ros__parameters": {"no_such_key": 1}}}, "/**.ros__parameters.no_such_key"),
])
def test_invalid_files_name_the_key(tmp_path, document, key_path):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, document))
    assert raised.value.key_path == key_path
    assert key_path in str(raised.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fusion_node: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_command(tmp_path, capsys):
    assert cli_main(["config", str(SHIPPED)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = write(tmp_path, {"fusion_node": {"ros__parameters": {"fp16": "yes"}}})
    assert cli_main(["config", str(bad)]) == 1
    assert "fusion_node.ros__parameters.fp16" in capsys.readouterr().err
    assert cli_main(["config", "--defaults"]) == 0
    assert capsys.readouterr().out == render_defaults_yaml()


@pytest.mark.parametrize("document", ["README.md", "docs/nodes.md"])
def test_parameter_reference_is_current(document):
    from mex_fusion_ros.config import render_markdown_reference

    text = (source_config_dir().parent / document).read_text()
    block = text.split("<!-- parameters:begin -->\n", 1)[1].split("<!-- parameters:end -->", 1)[0]
    assert block == render_markdown_reference(), (
        f"{document} parameter tables are stale: paste `mex-fusion config --markdown`")
