"""Node-owned threads that publish (control loop, physics, camera): paced, and ending quietly when the
ROS context shuts down under them."""
from __future__ import annotations

import threading
from typing import Callable

from rclpy._rclpy_pybind11 import RCLError
from rclpy.node import Node

from asyncvla_ros.control.pacing import run_paced


class NodeLoop:
    def __init__(self, node: Node, name: str, step: Callable[[], None], period: Callable[[], float]):
        self._node, self._step, self._period = node, step, period
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
        run_paced(self._guarded_step, self._period, lambda: self._stop.is_set() or not self._node.context.ok())
