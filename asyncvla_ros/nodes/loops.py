"""Node-owned threads that publish (control loop, physics, camera): paced, and ending quietly when the
ROS context shuts down under them; and the nodes' common `main`."""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node

from asyncvla_ros.control.pacing import run_paced

GIL_SWITCH_INTERVAL_S = 0.0002


class NodeLoop:
    """`realtime_priority` > 0 asks for SCHED_FIFO at that priority for this thread (needs
    CAP_SYS_NICE or an rtprio limit, as on a robot computer set up for ros2_control); without the
    permission the loop runs at normal priority and says so once. `on_error` gets an exception a step
    raised, and the loop goes on; without it the exception ends the loop."""

    def __init__(
        self,
        node: Node,
        name: str,
        step: Callable[[], None],
        period: Callable[[], float],
        realtime_priority: int = 0,
        on_error: Callable[[Exception], None] | None = None,
    ):
        self._node, self._step, self._period = node, step, period
        self._priority, self._on_error = realtime_priority, on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> NodeLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _guarded_step(self) -> None:
        try:
            self._step()
        except RCLError:
            if self._node.context.ok():
                raise
            self._stop.set()  # the context went down under a publish: shutting down
        except Exception as exc:  # a step that fails must not end the loop silently
            if self._on_error is None:
                raise
            self._on_error(exc)

    def _run(self) -> None:
        if self._priority > 0:
            make_realtime(self._priority, self._node.get_logger(), self._thread.name)
        run_paced(self._guarded_step, self._period, lambda: self._stop.is_set() or not self._node.context.ok())


def make_realtime(priority: int, logger, what: str) -> None:
    """SCHED_FIFO at `priority` for the calling thread. In Python a real-time thread also needs the GIL
    promptly, so the interpreter's switch interval (how long another thread may keep the GIL, 5 ms by
    default) is shortened too, and the garbage collector leaves the objects made so far alone. The threads
    it waits for should be real-time as well (below it), or a preempted GIL holder stalls it."""
    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
    gc.freeze()  # what exists now (modules, the node) is never scanned again: full collections stay short
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        logger.warning(f'{what}: no real-time priority ({exc}); timing may jitter under load')
        return
    logger.info(f'{what}: real-time priority {priority} (SCHED_FIFO)')


def run_node(node_class, args=None) -> None:
    """A node's `main`: init, create, bring a lifecycle node to active (as a launch file's lifecycle
    events would), spin until Ctrl-C, clean up without a traceback."""
    rclpy.init(args=args)
    node = node_class()
    # Single-threaded on purpose: rclpy's MultiThreadedExecutor holds the GIL so much that the nodes'
    # own threads (control loop, physics) miss their periods.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if isinstance(node, LifecycleNode) and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
        if getattr(node, 'spin_realtime_priority', 0) > 0:
            make_realtime(node.spin_realtime_priority, node.get_logger(), 'callbacks')
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        print(f'{node.get_name()}: shutting down', flush=True)  # the rosout publisher is gone with the context
    except RuntimeError as exc:  # rclpy's RCLError
        if rclpy.ok():
            raise
        # Ctrl-C shut the context down while the executor was building its wait set: a shutdown too
        print(f'{node.get_name()}: shutting down (the context went down mid-spin: {exc})', flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
