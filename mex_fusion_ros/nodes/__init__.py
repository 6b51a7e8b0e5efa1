"""rclpy nodes and adapters; the only sub-package that imports rclpy."""
