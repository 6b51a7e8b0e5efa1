"""Test session set-up: DDS stays on loopback, one ROS domain per session, shared data location."""
import os
from pathlib import Path

import pytest
from hypothesis import settings

# Before any rclpy import: Fast DDS must not multicast on the network interface (DEVELOPERS.md).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
# Each test session its own domain (0..101 are valid with the default port mapping on Linux).
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# CI (.ci/run sets HYPOTHESIS_PROFILE=ci) runs the examples derived from each test's name, so a
# clean machine checks exactly what passed here instead of drawing new random examples; local runs
# keep drawing new ones, which is how property tests find problems.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ROADSCENE = SHARED_DATA / "roadscene"


@pytest.fixture(scope="session")
def roadscene() -> Path:
    """``../shared/data/roadscene``; tests that need real pairs skip with the reason when absent."""
    if not (ROADSCENE / "val" / "ir").is_dir():
        pytest.skip(f"real RoadScene pairs not found at {ROADSCENE} (see ../shared/data/README.md)")
    return ROADSCENE
