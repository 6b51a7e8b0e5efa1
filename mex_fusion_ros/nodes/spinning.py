"""Spin several nodes in one process the way ``ros2 launch`` runs them in several: one
``SingleThreadedExecutor`` per node, each in its own thread (rclcpp calls this an isolated
component container).

Why not one ``MultiThreadedExecutor`` for all of them: while a callback of a mutually exclusive
group runs for long (the detector's YOLO forward), rclpy's multi-threaded executor keeps finding
that group's subscription ready, cannot dispatch it, and loops — about 3000 ``spin_once`` calls a
second measured here. That Python loop holds the GIL in 5 ms slices, so every other thread that
drops the GIL (each torch op, each numpy call) waits for it again: a 9 ms YOLO forward took up to
5 s and a 5 ms classical fusion 1.3 s. A single-threaded executor runs the callback in its own
thread and does not poll meanwhile, so a slow node slows only itself, as in separate processes.

Used by ``mex-fusion run``, the live bag replay and the node tests.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["IsolatedExecutors"]


class IsolatedExecutors:
    """Context manager: spin each node on its own single-threaded executor in a daemon thread.

    ``context``: the rclpy context the nodes were created in (``None``: the default one).
    A callback that raises stops every executor; ``error`` keeps the first exception and ``wait``
    re-raises it in the caller's thread. Leaving the ``with`` block removes the nodes from their
    executors and shuts the executors down; destroying the nodes stays with their owner.
    """

    def __init__(self, nodes: Sequence[Any], context: Any | None = None, poll_s: float = 0.1) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.nodes = list(nodes)
        self.context = context
        self.poll_s = poll_s
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._executors = []
        self._threads: list[threading.Thread] = []
        for node in self.nodes:
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            self._executors.append(executor)
            self._threads.append(threading.Thread(target=self._spin, args=(executor,), daemon=True,
                                                  name=f"executor:{node.get_name()}"))

    def _context_ok(self) -> bool:
        import rclpy

        return rclpy.ok(context=self.context)

    def _spin(self, executor: Any) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while not self._stop.is_set() and self._context_ok():
                executor.spin_once(timeout_sec=self.poll_s)
        except ExternalShutdownException:
            pass
        except BaseException as error:  # noqa: BLE001 - reported to the owner through ``error``/``wait``
            if not self._stop.is_set() and self.error is None:
                self.error = error
        finally:
            self._stop.set()

    def start(self) -> IsolatedExecutors:
        for thread in self._threads:
            thread.start()
        return self

    def running(self) -> bool:
        """True until ``stop``, a callback error, or the context shutting down."""
        return not self._stop.is_set() and self._context_ok()

    def wait(self, duration: float = 0.0) -> None:
        """Block until the executors stop (or ``duration`` seconds pass, when > 0); re-raise a callback error."""
        deadline = time.monotonic() + duration if duration > 0 else None
        while self.running() and (deadline is None or time.monotonic() < deadline):
            self._stop.wait(0.1)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=10.0)
        for executor, node in zip(self._executors, self.nodes):
            executor.remove_node(node)
            executor.shutdown()

    def __enter__(self) -> IsolatedExecutors:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
