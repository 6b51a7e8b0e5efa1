"""The package installs where ROS tools look: ament index, share/ files, lib/<package> executables.

Two install paths exist: colcon (honours setup.cfg's install_scripts) and pip (does not; the set-up
bridges it with ``mex_fusion_ros.tools.ros_prefix``). The pip path is checked here twice: a real,
non-editable ``pip install --prefix`` into a temporary prefix, and the project's own editable .venv.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mex_fusion_ros.tools.ros_prefix import share_layout, site_packages

REPO = Path(__file__).resolve().parent.parent
NODE_EXECUTABLES = {"fusion_node", "detector_node"}


def declared_console_scripts() -> set[str]:
    namespace: dict = {}
    source = (REPO / "setup.py").read_text()
    start = source.index("CONSOLE_SCRIPTS = [")
    exec(source[start:source.index("]", start) + 1], namespace)  # the list literal only
    return {entry.split("=")[0].strip() for entry in namespace["CONSOLE_SCRIPTS"]}


def ament_lookup(prefix: Path, extra_pythonpath: Path | None = None) -> dict[str, str]:
    """Resolve share files through ament_index_python in a clean subprocess."""
    code = (
        "from ament_index_python.packages import get_package_share_directory as g\n"
        "import os\n"
        "d = g('mex_fusion_ros')\n"
        "print(d)\n"
        "for rel in ('launch/fusion.launch.py', 'config/fusion.yaml', 'package.xml'):\n"
        "    print(rel, os.path.isfile(os.path.join(d, rel)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    env["AMENT_PREFIX_PATH"] = str(prefix)
    if extra_pythonpath:
        env["PYTHONPATH"] = str(extra_pythonpath)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    return {"share": lines[0], **dict(line.split(" ") for line in lines[1:])}


def test_every_node_has_a_console_script():
    assert {"mex-fusion"} | NODE_EXECUTABLES <= declared_console_scripts()


def test_setup_cfg_puts_scripts_where_ros2_run_looks():
    text = (REPO / "setup.cfg").read_text()
    assert "install_scripts=$base/lib/mex_fusion_ros" in text
    assert "script_dir=$base/lib/mex_fusion_ros" in text


def test_share_layout_lists_the_launch_and_config_files():
    layout = dict(share_layout())
    assert "launch/fusion.launch.py" in layout["share/mex_fusion_ros/launch"]
    assert "config/fusion.yaml" in layout["share/mex_fusion_ros/config"]
    assert layout["share/ament_index/resource_index/packages"] == ["resource/mex_fusion_ros"]


@pytest.fixture(scope="module")
def pip_prefix(tmp_path_factory) -> Path:
    """A real (non-editable) pip install of the package into an empty prefix, then the ROS bridge."""
    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--ignore-installed",  # never uninstall the developer's own (editable) install
                    "--prefix", str(prefix), str(REPO)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(site_packages(prefix)))
    subprocess.run([sys.executable, "-m", "mex_fusion_ros.tools.ros_prefix", "--prefix", str(prefix)],
                   check=True, capture_output=True, env=env)
    return prefix


def test_pip_install_is_found_through_the_ament_index(pip_prefix):
    found = ament_lookup(pip_prefix)
    assert found["share"] == str(pip_prefix / "share" / "mex_fusion_ros")
    assert found["launch/fusion.launch.py"] == "True"
    assert found["config/fusion.yaml"] == "True"
    assert found["package.xml"] == "True"


def test_pip_install_executables_are_in_lib_package(pip_prefix):
    libexec = pip_prefix / "lib" / "mex_fusion_ros"
    for name in declared_console_scripts():
        path = libexec / name
        assert path.exists() and os.access(path, os.X_OK), f"{path} missing: ros2 run would fail"
    env = dict(os.environ, PYTHONPATH=str(site_packages(pip_prefix)))
    out = subprocess.run([str(libexec / "mex-fusion"), "--version"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "0.1.0" in out.stdout


def test_project_venv_is_a_working_ros_prefix():
    prefix = Path(sys.prefix)
    if not (prefix / "share" / "ament_index").is_dir():
        pytest.skip(f"{prefix} was not set up by scripts/setup.sh")
    found = ament_lookup(prefix)
    assert found["launch/fusion.launch.py"] == "True" and found["config/fusion.yaml"] == "True"
    for name in declared_console_scripts():
        assert (prefix / "lib" / "mex_fusion_ros" / name).exists()


@pytest.fixture(scope="module")
def colcon_workspace(tmp_path_factory) -> Path:
    """The tracked files cloned into a workspace's src/, as a robot user does, then ``colcon build``."""
    colcon = Path(sys.prefix) / "bin" / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (requirements.txt installs it)")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if tracked.returncode != 0:
        pytest.skip(f"{REPO} is not a git checkout; cannot tell which files a clone would have")
    workspace = tmp_path_factory.mktemp("ws")
    source = workspace / "src" / "mex_fusion_ros"
    for name in filter(None, tracked.stdout.decode().split("\0")):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            target.write_bytes((REPO / name).read_bytes())
            target.chmod((REPO / name).stat().st_mode)
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, PATH=f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}")
    built = subprocess.run([str(colcon), "build", "--packages-select", "mex_fusion_ros"], cwd=workspace,
                           env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return workspace


def test_colcon_finds_both_packages_with_the_documented_base_paths(colcon_workspace):
    colcon = Path(sys.prefix) / "bin" / "colcon"
    listed = subprocess.run([str(colcon), "list", "--names-only", "--base-paths", "src",
                             "src/mex_fusion_ros/mex_fusion_msgs"],
                            cwd=colcon_workspace, capture_output=True, text=True, check=True)
    assert set(listed.stdout.split()) == {"mex_fusion_ros", "mex_fusion_msgs"}


def test_colcon_install_is_found_by_ros_tools(colcon_workspace):
    prefix = colcon_workspace / "install" / "mex_fusion_ros"
    found = ament_lookup(prefix)
    assert found["launch/fusion.launch.py"] == "True" and found["config/fusion.yaml"] == "True"
    for name in declared_console_scripts():
        path = prefix / "lib" / "mex_fusion_ros" / name
        assert path.is_file() and os.access(path, os.X_OK), f"colcon did not install {path}"
