"""Cameras across a link between two hosts: the sim and the executor in one network namespace, policy_node (the
demo checkpoint) in another, joined by a veth pair, with the two-host Fast DDS profile (tools/netns.py; needs
root or CAP_NET_ADMIN). The sim's two cameras go across raw, then as JPEG (`camera_transport: compressed`), in
one run; a recorder on the policy's host measures what crosses.

Per transport: bandwidth per camera (MB/s received on the policy's host) and observation-to-chunk latency (a
chunk's arrival back at the robot's host minus the stamp of the images it was computed from; p50, p95).
Ratios: bandwidth_ratio and latency_ratio (compressed over raw). Last line: JSON.

    python bench/camera_link.py [--seconds 30] [--size 640x480] [--quality 90]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from asyncvla_ros.paths import SOURCE_ROOT, config_path
from asyncvla_ros.tools.bags import open_bag
from asyncvla_ros.tools.netns import inside, two_hosts
from asyncvla_ros.tools.processes import NodeProcess, cli_command, ros_environment

CAMERAS = ('front', 'wrist')


def record(namespace: str, env: dict, bag: Path, seconds: float, topics: list[str]) -> subprocess.Popen:
    """`asyncvla record` of `topics` for `seconds`, inside `namespace`."""
    command = cli_command(
        'record', '--output', bag, '--duration', seconds, '--topics', *topics, prefix=inside(namespace)
    )
    return subprocess.Popen(command, env=env, cwd=SOURCE_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(transport: str, args, hosts: dict, workdir: Path) -> dict:
    (robot, robot_address), (gpu, gpu_address) = hosts['robot'], hosts['gpu']
    robot_env, gpu_env = ros_environment(peers=[gpu_address]), ros_environment(peers=[robot_address])
    width, height = (int(v) for v in args.size.split('x'))
    suffix = '/compressed' if transport == 'compressed' else ''
    camera_topics = [f'camera/{name}/image_raw{suffix}' for name in CAMERAS]
    sim = {'image_width': width, 'image_height': height, 'camera_transport': transport, 'jpeg_quality': args.quality}
    nodes = [
        NodeProcess(
            'sim_arm_node',
            'asyncvla_ros.nodes.sim_arm_node',
            workdir,
            [config_path('sim_arm.yaml')],
            sim,
            robot_env,
            prefix=inside(robot),
        ),
        NodeProcess(
            'executor_node',
            'asyncvla_ros.nodes.executor_node',
            workdir,
            [config_path('executor.yaml')],
            {'start_enabled': True},
            robot_env,
            prefix=inside(robot),
        ),
        NodeProcess(
            'policy_node',
            'asyncvla_ros.nodes.policy_node',
            workdir,
            [config_path('policy.yaml')],
            {'camera_topics': camera_topics},
            gpu_env,
            prefix=inside(gpu),
        ),
    ]
    link_bag, robot_bag = workdir / f'{transport}_gpu', workdir / f'{transport}_robot'
    try:
        for node in nodes:
            node.start()
        recorders = [
            record(gpu, gpu_env, link_bag, args.seconds, ['/' + t for t in camera_topics]),
            record(robot, robot_env, robot_bag, args.seconds, ['/asyncvla/action_chunk']),
        ]
        for recorder in recorders:
            if recorder.wait(timeout=args.seconds + 60):
                raise SystemExit(f'a recorder failed; logs in {workdir}')
    finally:
        for node in nodes:
            node.stop()
    with open_bag(link_bag) as reader:
        sizes = {c.topic: 0 for c in reader.connections}
        for connection, _, raw in reader.messages():
            sizes[connection.topic] += len(raw)
    latencies = []
    with open_bag(robot_bag) as reader:
        for connection, received_ns, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            latencies.append(received_ns * 1e-9 - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))
    if not latencies:
        raise SystemExit(f'{transport}: no chunk crossed the link; logs in {workdir}')
    return {
        'bandwidth_mb_s_per_camera': sum(sizes.values()) / len(CAMERAS) / args.seconds / 1e6,
        'latency_ms_p50': float(np.percentile(latencies, 50) * 1e3),
        'latency_ms_p95': float(np.percentile(latencies, 95) * 1e3),
        'chunks': len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type=float, default=30.0)
    parser.add_argument('--size', default='640x480', help='camera image size, WIDTHxHEIGHT')
    parser.add_argument('--quality', type=int, default=90, help='JPEG quality of the compressed run')
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix='asyncvla-camera-link-'))
    with two_hosts() as hosts:
        results = {transport: run(transport, args, hosts, workdir) for transport in ('raw', 'compressed')}
    for transport, r in results.items():
        print(
            f'{transport}: {r["bandwidth_mb_s_per_camera"]:.2f} MB/s per camera, observation to chunk '
            f'p50 {r["latency_ms_p50"]:.0f} ms, p95 {r["latency_ms_p95"]:.0f} ms ({r["chunks"]} chunks)'
        )
    raw, compressed = results['raw'], results['compressed']
    print(
        json.dumps(
            {
                **{f'{t}_{k}': v for t, r in results.items() for k, v in r.items()},
                'bandwidth_ratio': compressed['bandwidth_mb_s_per_camera'] / raw['bandwidth_mb_s_per_camera'],
                'latency_ratio': compressed['latency_ms_p50'] / raw['latency_ms_p50'],
                'size': args.size,
                'quality': args.quality,
            }
        )
    )


if __name__ == '__main__':
    main()
