"""rosbag2 tools (via ``rosbags``, no ROS install needed for offline work).

- ``scene``: the synthetic thermal + RGB street scene of the built-in demo;
- ``timeline``: degradation timelines (which preset is active when) and how they are stored;
- ``writer`` / ``reader``: sensor_msgs/Image topics in and out of MCAP or sqlite3 bags;
- ``make_command``, ``eval_command``, ``info``: the ``mex-fusion bag`` sub-commands;
- ``report``: the HTML + JSON report of an offline evaluation.
"""

#: Topic names written by ``mex-fusion bag make`` and read by ``mex-fusion bag eval`` by default.
THERMAL_TOPIC = "/thermal/image_raw"
RGB_TOPIC = "/rgb/image_raw"
REFERENCE_THERMAL_TOPIC = "/reference/thermal"
REFERENCE_RGB_TOPIC = "/reference/rgb"
TIMELINE_TOPIC = "/mex_fusion/degradation_timeline"
FUSED_TOPIC = "/fused/image"
#: JSON sidecar written next to the storage file(s) inside the bag directory.
TIMELINE_SIDECAR = "degradation_timeline.json"

IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_MSGTYPE = "sensor_msgs/msg/CompressedImage"
STRING_MSGTYPE = "std_msgs/msg/String"
