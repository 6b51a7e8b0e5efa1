"""Installation helpers (no ROS imports)."""
