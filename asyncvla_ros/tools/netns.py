"""Two hosts on one machine, for the two-host test and benchmark: two network namespaces joined by a veth pair,
with addresses that exist only inside them. Needs root or CAP_NET_ADMIN; `HostsUnavailable` says why not."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator


class HostsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (no `ip`, no privilege); the message says which."""


def _ip(*args: str) -> None:
    subprocess.run(['ip', *args], check=True, capture_output=True, text=True, timeout=10)


@contextlib.contextmanager
def two_hosts(subnet: str = '10.213.7') -> Iterator[dict[str, tuple[str, str]]]:
    """{'robot': (namespace, address), 'gpu': (namespace, address)}; both namespaces, and with them the veth
    pair, are removed on exit, also after an error."""
    tag = os.getpid() % 100_000
    hosts = {'robot': (f'asyncvla_robot_{tag}', f'{subnet}.1'), 'gpu': (f'asyncvla_gpu_{tag}', f'{subnet}.2')}
    devices = {'robot': f'avr{tag}', 'gpu': f'avg{tag}'}
    made = []
    try:
        try:
            for namespace, _ in hosts.values():
                _ip('netns', 'add', namespace)
                made.append(namespace)
            _ip('link', 'add', devices['robot'], 'type', 'veth', 'peer', 'name', devices['gpu'])
            for role, (namespace, address) in hosts.items():
                _ip('link', 'set', devices[role], 'netns', namespace)
                _ip('-n', namespace, 'addr', 'add', f'{address}/24', 'dev', devices[role])
                _ip('-n', namespace, 'link', 'set', devices[role], 'up')
                _ip('-n', namespace, 'link', 'set', 'lo', 'up')
        except (OSError, subprocess.SubprocessError) as exc:
            reason = (getattr(exc, 'stderr', '') or str(exc)).strip()
            raise HostsUnavailable(
                f'network namespaces cannot be made here ({reason}); needs root or CAP_NET_ADMIN'
            ) from exc
        yield hosts
    finally:
        for namespace in made:  # removing a namespace removes its end of the veth pair, and so the pair
            subprocess.run(['ip', 'netns', 'del', namespace], capture_output=True)


def inside(namespace: str) -> list[str]:
    """The command prefix that runs a process in `namespace`."""
    return ['ip', 'netns', 'exec', namespace]
