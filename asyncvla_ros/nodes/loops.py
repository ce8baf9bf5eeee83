"""Node-owned threads that publish (control loop, physics, camera): paced, and ending quietly when the
ROS context shuts down under them; and the nodes' common `main`."""
from __future__ import annotations

import os
import sys
import threading
from typing import Callable

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
    permission the loop runs at normal priority and says so once."""

    def __init__(self, node: Node, name: str, step: Callable[[], None], period: Callable[[], float],
                 realtime_priority: int = 0):
        self._node, self._step, self._period = node, step, period
        self._priority = realtime_priority
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> 'NodeLoop':
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

    def _run(self) -> None:
        if self._priority > 0:
            # A real-time thread in Python also needs the GIL promptly: another thread may keep it for
            # the interpreter's switch interval (5 ms by default) before it has to let go.
            sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self._priority))
                self._node.get_logger().info(f'{self._thread.name}: real-time priority {self._priority} (SCHED_FIFO)')
            except (PermissionError, OSError) as exc:
                self._node.get_logger().warning(f'{self._thread.name}: no real-time priority ({exc}); timing may jitter under load')
        run_paced(self._guarded_step, self._period, lambda: self._stop.is_set() or not self._node.context.ok())


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
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        print(f'{node.get_name()}: shutting down', flush=True)  # the rosout publisher is gone with the context
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
