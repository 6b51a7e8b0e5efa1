"""rosbag2 tools (via ``rosbags``, no rosbag2 install needed; only ``live``/``replay`` use rclpy).

- ``scene``: the synthetic thermal + RGB street scene of the built-in demo;
- ``timeline``: degradation timelines (which preset is active when) and how they are stored;
- ``make``: clean frames -> a bag with camera rates, jitter, offset, degradations, references;
- ``writer`` / ``reader`` (+ ``mcap_salvage`` / ``sqlite_salvage``: storage read past damage,
  chunk CRCs written): images in and out of bags;
- ``evaluate`` / ``report`` / ``detection``: offline replay with the node's synchroniser and
  pipeline, its HTML + JSON report, detection counts and mAP;
- ``live`` / ``replay``: rclpy player and recorder, and the live replay through the ROS graph;
- ``*_command``: the ``mex-fusion bag`` sub-commands (``command`` dispatches them).
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
