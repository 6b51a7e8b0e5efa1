"""Thermal/RGB frame synchronisation (ROS-free), shared by the fusion node and the rosbag replay."""
from mex_fusion_ros.sync.synchronizer import (
    CAMERAS,
    RGB,
    SYNC_MODES,
    THERMAL,
    CameraCounts,
    DropReason,
    FramePair,
    LatestPairMailbox,
    PairSynchronizer,
    StampedFrame,
    SyncMode,
    SyncStats,
)

__all__ = [
    "CAMERAS",
    "RGB",
    "SYNC_MODES",
    "THERMAL",
    "CameraCounts",
    "DropReason",
    "FramePair",
    "LatestPairMailbox",
    "PairSynchronizer",
    "StampedFrame",
    "SyncMode",
    "SyncStats",
]
