"""The shipped Fast DDS profile (config/fastdds_large_images.xml) carries camera-sized best-effort
images between processes, which Fast DDS's default 0.5 MB shared-memory segment drops."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE = REPO_ROOT / "config" / "fastdds_large_images.xml"
PROBE = Path(__file__).resolve().parent / "dds_large_image_probe.py"
FRAMES = 20

pytestmark = pytest.mark.ros


def test_profile_is_installed_with_the_package():
    from mex_fusion_ros.tools.ros_prefix import share_layout

    config_files = dict(share_layout())["share/mex_fusion_ros/config"]
    assert "config/fastdds_large_images.xml" in config_files


def test_best_effort_640x512_rgb8_crosses_processes_with_the_profile():
    env = dict(os.environ)
    env.pop("ROS_LOCALHOST_ONLY", None)  # would make rmw_fastrtps replace the profile's transports
    assert env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"  # discovery stays on this machine
    env["ROS_DOMAIN_ID"] = str((int(env.get("ROS_DOMAIN_ID", "1")) + 50) % 100 + 1)
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
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
