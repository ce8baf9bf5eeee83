"""The `asyncvla` command line."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from asyncvla_ros.paths import SOURCE_ROOT


def cmd_docs(args) -> int:
    """Regenerate the README parameter tables and config/<node>.yaml from the schemas."""
    from asyncvla_ros.nodes.params import SCHEMAS, render_yaml

    readme = SOURCE_ROOT / 'README.md'
    text = readme.read_text()
    for node, schema in SCHEMAS.items():
        block = f'<!-- params:{node} -->\n{schema.markdown_table()}\n<!-- /params -->'
        pattern = re.compile(rf'<!-- params:{node} -->\n(?:.*?\n)??<!-- /params -->', re.S)
        if not pattern.search(text):
            print(f'docs: README.md has no <!-- params:{node} --> block; add one', file=sys.stderr)
            return 1
        text = pattern.sub(lambda _: block, text)
        config = SOURCE_ROOT / 'config' / f'{node.removesuffix("_node")}.yaml'
        values = schema.load_yaml(config) if config.exists() else None
        config.write_text(render_yaml(schema, values))
        print(f'docs: wrote {config.relative_to(SOURCE_ROOT)}')
    readme.write_text(text)
    print(f'docs: wrote the parameter tables in {readme.relative_to(SOURCE_ROOT)}')
    return 0


def cmd_demo(args) -> int:
    from asyncvla_ros.tools.demo import run_demo
    return run_demo(args)


def cmd_make_dataset(args) -> int:
    """Write SO-101 expert demonstrations as a LeRobot v3.0 dataset."""
    from asyncvla_ros.training.demonstrations import make_dataset
    result = make_dataset(args.output, args.episodes, args.seed, args.image_size)
    print(f'make-dataset: wrote {result["episodes"]} episodes ({result["frames"]} frames, {result["failed"]} failed '
          f'expert runs skipped) to {result["output"]}')
    print(json.dumps(result))
    return 0


def _specs(args):
    from asyncvla_ros.training.lerobot_format import DatasetSpec, load_data_config
    if args.data:
        return load_data_config(args.data)
    return [DatasetSpec(root=args.dataset, select_video_keys=['observation.images.front'])]


def cmd_train(args) -> int:
    """Unified SFM/AFM training of the policy (the rater is trained separately)."""
    from asyncvla_ros.training.trainer import TrainConfig, train_policy
    config = TrainConfig(preset=args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         vision_lr=args.vision_lr, image_size=args.image_size, seed=args.seed, save_every=args.save_every,
                         validate_every=args.validate_every, gradient_checkpointing=args.gradient_checkpointing)
    result = train_policy(_specs(args), args.output, config, resume=args.resume)
    print(f'train: {result["steps"]} steps in {result["seconds"]} s, loss {result["first_loss"]:.4f} -> '
          f'{result["last_loss"]:.4f}; checkpoint and train_log.csv in {result["output"]}')
    print(json.dumps(result))
    return 0


def cmd_train_rater(args) -> int:
    """Train the confidence rater with the policy frozen; report its calibration on held-out episodes."""
    from asyncvla_ros.training.trainer import train_rater
    result = train_rater(args.checkpoint, _specs(args), args.output, args.steps, args.batch_size, args.lr, args.seed)
    print(f'train-rater: {result["steps"]} steps, loss {result["first_loss"]:.4f} -> {result["last_loss"]:.4f}; '
          f'held-out action_error_ratio {result["action_error_ratio"]:.3f}, rater_spearman {result["rater_spearman"]:.3f}; '
          f'wrote {result["output"]}')
    print(json.dumps({k: result[k] for k in ('action_error_ratio', 'rater_spearman', 'action_error', 'action_error_sfm', 'output')}))
    return 0


def cmd_export(args) -> int:
    """Copy a checkpoint with its weights stored in another dtype (bfloat16 halves the size)."""
    import torch

    from asyncvla_ros.model import load_checkpoint, save_checkpoint
    model, processor = load_checkpoint(args.checkpoint, device='cpu', dtype='float32')
    save_checkpoint(model.to(getattr(torch, args.dtype)), processor, args.output)
    size = sum(f.stat().st_size for f in Path(args.output).iterdir()) / 2**20
    print(f'export: wrote {args.output} ({args.dtype} weights, {size:.1f} MB)')
    return 0


def cmd_bringup(args) -> int:
    """Start the nodes of sim.launch.py (sim) or asyncvla.launch.py (robot) as processes with the same
    parameter files, where `ros2 launch` is missing; Ctrl-C stops them all."""
    import signal
    import time

    from asyncvla_ros.paths import config_path
    from asyncvla_ros.tools.processes import NodeProcess, ros_environment

    log_dir = Path(args.log_dir)
    overrides = {'policy_node': {'checkpoint': str(args.checkpoint)} if args.checkpoint else {},
                 'executor_node': {'robot_profile': args.robot_profile, 'command_interface': args.command_interface},
                 'sim_arm_node': {}}
    names = (['sim_arm_node'] if args.target == 'sim' else []) + ['executor_node', 'policy_node']
    env = ros_environment(large_messages=True)
    nodes = [NodeProcess(name, f'asyncvla_ros.nodes.{name}', log_dir,
                         [config_path(f'{name.removesuffix("_node")}.yaml')], overrides=overrides[name], env=env)
             for name in names]
    print(f'bringup: starting {", ".join(names)}; logs in {log_dir.resolve()}/<node>.log; Ctrl-C stops them')
    for node in nodes:
        node.start()
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop:
            dead = [n.name for n in nodes if not n.running()]
            if dead:
                print(f'bringup: {", ".join(dead)} exited; see their logs; stopping the others')
                break
            time.sleep(0.5)
    finally:
        codes = {n.name: n.stop() for n in nodes}
        print(f'bringup: stopped {codes}')
    return 0 if stop else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='asyncvla', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('docs', help=cmd_docs.__doc__).set_defaults(func=cmd_docs)
    make = sub.add_parser('make-dataset', help=cmd_make_dataset.__doc__)
    make.add_argument('--episodes', type=int, default=100)
    make.add_argument('--seed', type=int, default=0)
    make.add_argument('--image-size', type=int, default=224)
    make.add_argument('--output', type=Path, required=True)
    make.set_defaults(func=cmd_make_dataset)
    for name, func in (('train', cmd_train), ('train-rater', cmd_train_rater)):
        p = sub.add_parser(name, help=func.__doc__)
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument('--data', type=Path, help='data YAML with lerobot_datasets entries')
        source.add_argument('--dataset', type=Path, help='one LeRobot v3.0 dataset root (front camera, state, action)')
        p.add_argument('--steps', type=int, default=2000 if name == 'train' else 500)
        p.add_argument('--batch-size', type=int, default=8)
        p.add_argument('--lr', type=float, default=1e-4)
        p.add_argument('--seed', type=int, default=0)
        p.set_defaults(func=func)
        if name == 'train':
            p.add_argument('--output', type=Path, required=True)
            p.add_argument('--preset', default='small', choices=['tiny', 'small', 'qwen2.5-vl-3b'])
            p.add_argument('--vision-lr', type=float, default=2e-5)
            p.add_argument('--image-size', type=int, default=112)
            p.add_argument('--save-every', type=int, default=500)
            p.add_argument('--validate-every', type=int, default=500)
            p.add_argument('--gradient-checkpointing', action='store_true')
            p.add_argument('--resume', type=Path, help='a checkpoint-<step> directory of an earlier run')
        else:
            p.add_argument('--checkpoint', type=Path, required=True)
            p.add_argument('--output', type=Path, help='where to write the checkpoint with the trained rater (default: in place)')
    export = sub.add_parser('export', help=cmd_export.__doc__)
    export.add_argument('--checkpoint', type=Path, required=True)
    export.add_argument('--output', type=Path, required=True)
    export.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float16', 'float32'])
    export.set_defaults(func=cmd_export)
    bringup = sub.add_parser('bringup', help=cmd_bringup.__doc__)
    bringup.add_argument('target', choices=['sim', 'robot'])
    bringup.add_argument('--checkpoint', type=Path)
    bringup.add_argument('--robot-profile', default='so101')
    bringup.add_argument('--command-interface', default='joint_trajectory', choices=['joint_trajectory', 'forward_command'])
    bringup.add_argument('--log-dir', type=Path, default=Path('runs/bringup'))
    bringup.set_defaults(func=cmd_bringup)
    demo = sub.add_parser('demo', help='closed loop on the simulated SO-101 arm')
    demo.add_argument('--episodes', type=int, default=20)
    demo.add_argument('--episode-seconds', type=float, default=30.0)
    demo.add_argument('--checkpoint', type=Path, help='default: the demo checkpoint shipped with the package')
    demo.add_argument('--seed', type=int, default=1000, help='sim seed (held-out scenes: the demos used seeds 0..99)')
    demo.add_argument('--output', type=Path, default=Path('runs/demo'))
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
