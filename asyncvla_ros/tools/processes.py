"""Start and stop ROS nodes as separate processes, as `ros2 launch` would: used by `asyncvla bringup`,
`make demo` and the tests. Each node gets `--ros-args --params-file ...`, its output goes to a log file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from asyncvla_ros.paths import SOURCE_ROOT, config_path


def ros_environment(base: dict | None = None, large_messages: bool = False, peers: list[str] | None = None) -> dict:
    """Environment for ROS processes: loopback-only discovery; with `large_messages`, the shipped
    Fast DDS profile (16 MB shared memory, UDP on 127.0.0.1) that camera images need; with `peers` (other
    hosts' addresses), the two-host profile and discovery of those static peers (no multicast beyond this host)."""
    env = dict(os.environ if base is None else base)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    if peers:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(config_path('fastdds_two_hosts.xml'))
        env['ROS_STATIC_PEERS'] = ';'.join(peers)
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # automatic discovery on this host, the peers beyond it
    elif large_messages:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(config_path('fastdds_localhost_large.xml'))
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'SYSTEM_DEFAULT'
    env.setdefault('PYTHONUNBUFFERED', '1')
    return env


def cli_command(*args, prefix: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`asyncvla ARGS` as a process command (this interpreter), after `prefix` (e.g. a network namespace)."""
    return [*prefix, sys.executable, '-m', 'asyncvla_ros.tools.cli', *map(str, args)]


@dataclass
class NodeProcess:
    """One node in its own process: `module` is a module name (`python -m`) or a script path."""

    name: str
    module: str
    log_dir: Path
    params_files: list[Path] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    env: dict | None = None
    extra_args: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)  # e.g. ['ip', 'netns', 'exec', NAME]: where it runs
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f'{self.name}.log'

    def command(self) -> list[str]:
        target = [self.module] if self.module.endswith('.py') else ['-m', self.module]
        cmd = [*self.prefix, sys.executable, *target, *self.extra_args, '--ros-args', '-r', f'__node:={self.name}']
        for path in self.params_files:
            cmd += ['--params-file', str(path)]
        for key, value in self.overrides.items():
            cmd += ['-p', f'{key}:={_ros_arg(value)}']
        return cmd

    def start(self) -> NodeProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, 'ab')  # noqa: SIM115 (the child writes to it for its whole life)
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=SOURCE_ROOT, start_new_session=True
        )
        log.close()
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ctrl-C first (nodes exit cleanly on SIGINT), then terminate, then kill."""
        if self.process is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.process.poll() is not None:
                break
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.process.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''


def _ros_arg(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(_ros_arg(v) if not isinstance(v, str) else f"'{v}'" for v in value) + ']'
    return str(value)
