"""mex_fusion_ros: degradation-gated mixture-of-experts thermal/RGB fusion for ROS 2.

Sub-packages by concern; only ``nodes`` imports rclpy:

- ``codec``: sensor_msgs image fields <-> numpy, thermal automatic gain control
- ``data``: paired infrared/visible datasets, synthetic degradations
- ``eval``: fusion metrics, evaluation runner and reports
- ``fusion``: the common fuser interface and the classical baselines
- ``model``: the MoE fusion network, training, ``Fuser`` API
- ``sync``: thermal/RGB time synchronisation shared by the node and the bag replay
- ``bag``: rosbag2 writing, reading and offline replay
- ``nodes``: the ROS 2 nodes (thin adapters over the above)
"""

__version__ = "0.1.0"
PACKAGE_NAME = "mex_fusion_ros"
