"""The shipped Fast DDS profile (config/fastdds_large_images.xml) carries camera-sized best-effort
images between processes, which Fast DDS's default 0.5 MB shared-memory segment drops, under both
ways of keeping discovery on this computer (ROS_LOCALHOST_ONLY=1, which older distributions
read, and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mex_fusion_ros.nodes.dds_env import PROFILE_VARIABLES, large_image_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE = REPO_ROOT / "config" / "fastdds_large_images.xml"
PROBE = Path(__file__).resolve().parent / "dds_large_image_probe.py"
FRAMES = 20

pytestmark = pytest.mark.ros


def test_profile_is_installed_with_the_package():
    from mex_fusion_ros.tools.ros_prefix import share_layout

    config_files = dict(share_layout())["share/mex_fusion_ros/config"]
    assert "config/fastdds_large_images.xml" in config_files


@pytest.mark.parametrize("localhost_only", [True, False], ids=["ROS_LOCALHOST_ONLY", "DISCOVERY_RANGE_only"])
def test_best_effort_640x512_rgb8_crosses_processes_with_the_profile(localhost_only):
    env = dict(os.environ)
    if not localhost_only:
        env.pop("ROS_LOCALHOST_ONLY", None)
    assert env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"  # discovery stays on this machine
    env["ROS_DOMAIN_ID"] = str((int(env.get("ROS_DOMAIN_ID", "1")) + 50) % 100 + 1)
    for name in PROFILE_VARIABLES:
        env.pop(name, None)
    env.update(large_image_environment(PROFILE, env))  # as the launch file and `mex-fusion run` do
    subscriber = subprocess.Popen([sys.executable, str(PROBE), "sub", str(FRAMES)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = subprocess.Popen([sys.executable, str(PROBE), "pub", "640", "512", str(FRAMES)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        publisher_output, _ = publisher.communicate(timeout=60)
        subscriber_output, _ = subscriber.communicate(timeout=60)
    finally:
        for process in (publisher, subscriber):
            if process.poll() is None:
                process.kill()
    assert publisher.returncode == 0, publisher_output
    received = int(subscriber_output.strip().splitlines()[-1].split()[-1])
    assert received >= FRAMES - 2, f"{received} of {FRAMES} best-effort 983 KB images arrived\n{subscriber_output}"


def test_profile_variables_follow_the_distribution_and_respect_the_user() -> None:
    # Fast DDS 3 (Kilted; the PyPI wheels set no ROS_DISTRO) logs a deprecation warning per
    # participant for the old name: only the new one there.
    assert large_image_environment(PROFILE, {}) == {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    assert large_image_environment(PROFILE, {"ROS_DISTRO": "kilted"}) == {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    assert large_image_environment(PROFILE, {"ROS_DISTRO": "humble"}) == dict.fromkeys(PROFILE_VARIABLES, str(PROFILE))
    assert large_image_environment(PROFILE, {"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}
    assert large_image_environment(PROFILE, {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {}
