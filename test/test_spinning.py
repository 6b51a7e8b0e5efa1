"""``nodes.spinning.IsolatedExecutors``: one executor thread per node (real rclpy)."""
from __future__ import annotations

import threading
import time

import pytest
from node_harness import ros_context
from rclpy.node import Node

from mex_fusion_ros.nodes.spinning import IsolatedExecutors

pytestmark = pytest.mark.ros


def test_a_blocked_node_does_not_hold_up_the_others():
    # One node's callback blocks for a second (a slow model forward); the other node's timer must
    # keep firing meanwhile, as it would in its own process.
    release = threading.Event()
    ticks: list[float] = []
    with ros_context() as context:
        slow, fast = Node("slow", context=context), Node("fast", context=context)
        slow.create_timer(0.01, lambda: release.wait(5.0))
        fast.create_timer(0.02, lambda: ticks.append(time.monotonic()))
        try:
            with IsolatedExecutors([slow, fast], context=context) as executors:
                time.sleep(0.3)  # the slow node is now inside its callback
                ticks.clear()
                time.sleep(1.0)
                release.set()
                assert executors.running()
        finally:
            release.set()
            slow.destroy_node()
            fast.destroy_node()
    assert len(ticks) >= 25, f"{len(ticks)} timer callbacks in 1 s while the other node was blocked"


def test_a_callback_error_stops_the_executors_and_is_raised_by_wait():
    with ros_context() as context:
        node = Node("faulty", context=context)

        def fail() -> None:
            raise RuntimeError("boom in a callback")

        node.create_timer(0.01, fail)
        try:
            with IsolatedExecutors([node], context=context) as executors, \
                    pytest.raises(RuntimeError, match="boom in a callback"):
                executors.wait(5.0)
            assert not executors.running()
        finally:
            node.destroy_node()
