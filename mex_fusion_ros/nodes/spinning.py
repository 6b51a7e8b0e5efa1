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

Stopping (``StopSignals``, ``run_until_stopped``; the node executables and ``mex-fusion run``):
SIGINT and SIGTERM only *ask* for a stop, and the main thread stops in a fixed order — executors,
then nodes (the fusion worker before its publishers), then the context — so nothing publishes
into a context that is gone. rclpy's own handlers are not installed: on Humble to Kilted they
shut the context down from a signal thread while callbacks and worker threads are still
publishing ("publisher's context is invalid"), and Python raises ``KeyboardInterrupt`` for every
SIGINT, also for the second one that ``ros2 launch`` plus a terminal, ``timeout`` or a supervisor
deliver to the process group while ``destroy_node()`` runs (a traceback and exit status -2).
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

__all__ = ["IsolatedExecutors", "StopSignals", "end_process", "run_until_stopped"]


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

    def wait(self, duration: float = 0.0, until: threading.Event | None = None) -> None:
        """Block until the executors stop, ``duration`` seconds pass (when > 0) or ``until`` is set;
        re-raise a callback error."""
        deadline = time.monotonic() + duration if duration > 0 else None
        while (self.running() and (until is None or not until.is_set())
               and (deadline is None or time.monotonic() < deadline)):
            self._stop.wait(0.1)  # short: a signal handler runs in this (main) thread between waits
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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """SIGINT and SIGTERM request one clean stop; every signal after the first is ignored.

    ``requested`` is set by the first signal. Inside ``interruptible()`` (start-up: rclpy init,
    loading a model) the first signal also raises ``KeyboardInterrupt``, so a slow start can be
    cancelled; elsewhere a signal never raises, so it cannot cut a clean-up short. ``after_stop``
    then ignores further signals until the process exits (or, without a stop signal, puts the
    previous handlers back, as ``uninstall`` does). Only the main thread can install handlers
    (Python's rule); elsewhere ``install`` does nothing and ``installed`` stays False.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        #: Name of the first signal received (``"SIGINT"``), or ``""``.
        self.received = ""
        self.installed = False
        self._interruptible = False
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._on_signal)
            self.installed = True
        return self

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
        self.installed = False

    def _on_signal(self, number: int, frame: Any) -> None:
        if self.requested.is_set():
            return  # already stopping: a second SIGINT from the process group must not interrupt it
        self.received = signal.Signals(number).name
        self.requested.set()
        if self._interruptible:
            raise KeyboardInterrupt

    def after_stop(self) -> None:
        """The process is about to exit: after a stop signal, ignore further ones at the OS level
        (Python restores SIG_DFL for its handlers while the interpreter finalizes, and a second
        SIGINT then would end the process with status -2); otherwise put the previous handlers back."""
        if not self.installed:
            return
        if self.requested.is_set():
            for number in STOP_SIGNALS:
                signal.signal(number, signal.SIG_IGN)
        else:
            self.uninstall()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block, the first stop signal raises ``KeyboardInterrupt`` (start-up only)."""
        if self.requested.is_set():
            raise KeyboardInterrupt  # asked to stop before the start-up began
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False


def run_until_stopped(build: Callable[[Any], Sequence[Any]], ros_args: Sequence[str],
                      duration: float = 0.0) -> str:
    """Start ROS, build the nodes, spin each on its own executor until a stop, then stop in order.

    ``build(context)`` makes the nodes (in ``context``); its exceptions (a node that cannot start)
    propagate after the clean-up. It stops on SIGINT/SIGTERM, after ``duration`` seconds (when > 0)
    or when the context is shut down; a callback's exception is re-raised after the clean-up.
    Order: executors (no callback runs any more), ``destroy_node`` of each node (the fusion node
    joins its worker before its publishers go), then the context. A stop signal during start-up
    cancels it and returns normally. Returns the name of the stop signal (``"SIGINT"``), or ``""``.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    stop = StopSignals().install()
    context = Context()
    nodes: Sequence[Any] = ()
    try:
        with stop.interruptible():
            rclpy.init(args=list(ros_args), context=context, signal_handler_options=SignalHandlerOptions.NO)
            nodes = build(context)
        if not stop.requested.is_set():
            with IsolatedExecutors(nodes, context=context) as executors:
                executors.wait(duration, until=stop.requested)
    except KeyboardInterrupt:
        if not stop.requested.is_set():
            raise  # not ours (no signal handler installed here): let the caller see it
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
        stop.after_stop()
    return stop.received


def end_process(status: int) -> NoReturn:
    """Exit now, without the interpreter's teardown, once everything ROS is stopped and destroyed.

    For the executables after a stop signal: unloading torch and ultralytics takes 0.5-1 s of CPU
    (measured; the detector took up to 4 s to exit on a busy 2-core machine), which a supervisor's
    stop timeout should not wait for. Nothing is lost: the nodes are destroyed (so DDS has
    announced that they left) and the context is shut down; Python's and C's output buffers and the
    logging handlers are flushed here.
    """
    import logging
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe must not stop the exit
            stream.flush()
    with contextlib.suppress(Exception):  # rcutils logs through C stdio; no libc handle on some systems
        import ctypes
        ctypes.CDLL(None).fflush(None)
    os._exit(status)
