"""Environment for the graph's node processes: Fast DDS carries camera-sized images (ROS-free).

Fast DDS moves samples between processes on one computer through shared memory, and its default
segment (0.5 MB) cannot hold a best-effort camera frame (640x512 rgb8 is 983 KB, mono16 655 KB):
such a sample is lost. The segment that counts is the *publisher's*. The shipped profile
``config/fastdds_large_images.xml`` adds a 16 MB shared-memory transport and leaves every other
transport and the discovery settings alone, so it works under ``ROS_LOCALHOST_ONLY=1`` and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` alike (docs/deployment.md, section 5).

``launch/fusion.launch.py`` gives it to the processes it starts (what ``fusion_node`` publishes
then reaches best-effort subscribers in other processes); a profile the user chose, or another
RMW, is left alone. Camera drivers are not started by this package: export it for them too.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: File name of the profile in the package's ``config/`` (source tree and ``share/``).
LARGE_IMAGES_PROFILE = "fastdds_large_images.xml"
#: Fast DDS 3 (Kilted and later) reads the first; Fast DDS 2 (Humble, Iron, Jazzy) the second.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
#: Distributions whose Fast DDS is 2.x. Fast DDS 3's RMW still reads the old variable but logs a
#: deprecation warning for every participant, so it is set only where it is the one read.
FAST_DDS_2_DISTRIBUTIONS = ("humble", "iron", "jazzy")


def large_image_environment(profile: str | Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables to add to a node process's environment so it loads ``profile``.

    Empty when the user already names a profile file (either variable) or runs an RMW other than
    Fast DDS (the default RMW when ``RMW_IMPLEMENTATION`` is unset). ``FASTRTPS_DEFAULT_PROFILES_FILE``
    is added only for the Fast DDS 2 distributions (``ROS_DISTRO``); without ``ROS_DISTRO`` (the
    PyPI wheels, Kilted) only the Fast DDS 3 name.
    """
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in PROFILE_VARIABLES):
        return {}
    if not environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        return {}
    names = PROFILE_VARIABLES if environ.get("ROS_DISTRO", "") in FAST_DDS_2_DISTRIBUTIONS else PROFILE_VARIABLES[:1]
    return dict.fromkeys(names, str(profile))
