"""ROS-free image message codec (sensor_msgs/Image and CompressedImage fields <-> numpy) and thermal AGC.

Nothing here imports rclpy or sensor_msgs: the codec works on the message *fields*, so the live
nodes (``nodes.image_msgs``), the rosbag reader/writer (``rosbags`` messages) and the tests share it.
"""
