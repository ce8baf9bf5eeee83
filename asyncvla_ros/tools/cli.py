"""The `asyncvla` command line."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from asyncvla_ros.paths import SOURCE_ROOT

RESPAWN_DELAY_S = 2.0  # bringup --respawn-policy; the launch files' respawn_policy uses the same (test_launch)


def cmd_docs(args) -> int:
    """Regenerate docs/parameters.md and config/<node>.yaml from the schemas."""
    from asyncvla_ros.nodes.params import SCHEMAS, render_markdown, render_yaml

    for node, schema in SCHEMAS.items():
        config = SOURCE_ROOT / 'config' / f'{node.removesuffix("_node")}.yaml'
        values = schema.load_yaml(config) if config.exists() else None
        config.write_text(render_yaml(schema, values))
        defaults = schema.defaults()
        kept = [
            f'{name}: {value!r} (default {defaults[name]!r})'
            for name, value in (values or {}).items()
            if value != defaults[name]
        ]
        print(
            f'docs: wrote {config.relative_to(SOURCE_ROOT)}'
            + (f', keeping its tuned values {", ".join(kept)}' if kept else '')
        )
    (SOURCE_ROOT / 'docs' / 'parameters.md').write_text(render_markdown())
    print('docs: wrote docs/parameters.md')
    return 0


def cmd_demo(args) -> int:
    from asyncvla_ros.tools.demo import run_demo

    return run_demo(args)


def _reports_bad_input(command):
    """A training command's bad dataset or checkpoint is a one-line error and exit code 2, not a traceback."""

    @functools.wraps(command)
    def run(args) -> int:
        from asyncvla_ros.model.checkpoint import CheckpointError
        from asyncvla_ros.training.lerobot_format import DatasetError

        try:
            return command(args)
        except (DatasetError, CheckpointError) as exc:
            print(f'{args.command}: {exc}', file=sys.stderr)
            return 2

    return run


def _specs(args):
    from asyncvla_ros.training.lerobot_format import DatasetSpec, load_data_config

    if args.data:
        return load_data_config(args.data)
    return [DatasetSpec(root=root) for root in args.dataset]  # every camera of each dataset


@_reports_bad_input
def cmd_make_dataset(args) -> int:
    """Write SO-101 expert demonstrations as a LeRobot v3.0 dataset."""
    from asyncvla_ros.training.demonstrations import make_dataset

    result = make_dataset(args.output, args.episodes, args.seed, args.image_size, args.recovery, args.recovery_policy)
    print(
        f'make-dataset: wrote {result["episodes"]} episodes ({result["frames"]} frames, {result["failed"]} failed '
        f'expert runs skipped) to {result["output"]}'
    )
    print(json.dumps(result))
    return 0


@_reports_bad_input
def cmd_train(args) -> int:
    """Unified SFM/AFM training of the policy (the rater is trained separately)."""
    from asyncvla_ros.training.trainer import TrainConfig, train_policy

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})
    result = train_policy(_specs(args), args.output, config, resume=args.resume, init_from=args.init_from)
    print(
        f'train: {result["steps"]} steps in {result["seconds"]} s, loss {result["first_loss"]:.4f} -> '
        f'{result["last_loss"]:.4f}; checkpoint and train_log.csv in {result["output"]}'
    )
    print(json.dumps(result))
    return 0


@_reports_bad_input
def cmd_train_rater(args) -> int:
    """Train the confidence rater with the policy frozen; report its calibration on held-out episodes."""
    from asyncvla_ros.training.trainer import train_rater

    result = train_rater(args.checkpoint, _specs(args), args.output, args.steps, args.batch_size, args.lr, args.seed)
    print(
        f'train-rater: {result["steps"]} steps, loss {result["first_loss"]:.4f} -> {result["last_loss"]:.4f}; '
        f'held-out action_error_ratio {result["action_error_ratio"]:.3f}, rater_spearman '
        f'{result["rater_spearman"]:.3f}; '
        f'wrote {result["output"]}'
    )
    print(
        json.dumps(
            {
                k: result[k]
                for k in ('action_error_ratio', 'rater_spearman', 'action_error', 'action_error_sfm', 'output')
            }
        )
    )
    return 0


@_reports_bad_input
def cmd_export(args) -> int:
    """Copy a checkpoint with its weights stored in another dtype (bfloat16 halves the size), or in EO-1's layout."""
    if args.eo1:
        from asyncvla_ros.model.eo1 import export_eo1_checkpoint

        output = export_eo1_checkpoint(args.checkpoint, args.eo1)
        print(f"export: wrote {output} in EO-1's layout (float32, without the rater)")
        return 0
    import torch

    from asyncvla_ros.model import load_checkpoint, save_checkpoint

    model, processor = load_checkpoint(args.checkpoint, device='cpu', dtype='float32')
    save_checkpoint(model.to(getattr(torch, args.dtype)), processor, args.output)
    size = sum(f.stat().st_size for f in Path(args.output).iterdir()) / 2**20
    print(f'export: wrote {args.output} ({args.dtype} weights, {size:.1f} MB)')
    return 0


@_reports_bad_input
def cmd_import_eo1(args) -> int:
    """Import an EO-1 checkpoint (safetensors + JSON; no code in it runs) as one of ours."""
    import torch

    from asyncvla_ros.model.eo1 import import_eo1_checkpoint

    for line in import_eo1_checkpoint(args.source, args.output, getattr(torch, args.dtype)):
        print(f'import-eo1: {line}')
    print(f'import-eo1: wrote {args.output}')
    return 0


def cmd_bringup(args) -> int:
    """Start the nodes of sim.launch.py (sim) or asyncvla.launch.py (robot) as processes with the same
    parameter files, where `ros2 launch` is missing; Ctrl-C stops them all."""
    import signal
    import time

    from asyncvla_ros.paths import config_path
    from asyncvla_ros.tools.processes import NodeProcess, ros_environment

    log_dir = Path(args.log_dir)
    overrides = {
        'policy_node': {
            'robot_profile': args.robot_profile,
            **({'checkpoint': str(args.checkpoint)} if args.checkpoint else {}),
        },
        'executor_node': {'robot_profile': args.robot_profile, 'command_interface': args.command_interface},
        'sim_arm_node': {},
    }
    names = (['sim_arm_node'] if args.target == 'sim' else []) + ['executor_node', 'policy_node']
    if args.nodes:  # this host's share of a graph that spans hosts
        names = [name for name in names if name.removesuffix('_node') in args.nodes]
    env = ros_environment(large_messages=True, peers=args.peers)
    nodes = [
        NodeProcess(
            name,
            f'asyncvla_ros.nodes.{name}',
            log_dir,
            [config_path(f'{name.removesuffix("_node")}.yaml')],
            overrides=overrides[name],
            env=env,
        )
        for name in names
    ]
    print(f'bringup: starting {", ".join(names)}; logs in {log_dir.resolve()}/<node>.log; Ctrl-C stops them')
    for node in nodes:
        node.start()
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    policy = next((n for n in nodes if n.name == 'policy_node'), None)
    try:
        while not stop:
            if args.respawn_policy and policy is not None and not policy.running():
                print(
                    f'bringup: policy_node exited (code {policy.process.returncode}); restarting it in '
                    f'{RESPAWN_DELAY_S:g} s (--respawn-policy); the executor holds the arm meanwhile',
                    flush=True,
                )
                time.sleep(RESPAWN_DELAY_S)
                if stop:
                    break
                policy.start()
            dead = [n.name for n in nodes if not n.running()]
            if dead:
                print(f'bringup: {", ".join(dead)} exited; see their logs; stopping the others')
                break
            time.sleep(0.5)
    finally:
        codes = {n.name: n.stop() for n in nodes}
        print(f'bringup: stopped {codes}')
    return 0 if stop else 1


def _bag_command(name: str, run) -> int:
    """Runs a bag command: its result as the last JSON line, or its BagError on stderr with exit code 2."""
    from asyncvla_ros.tools.bags import BagError

    try:
        result = run()
    except BagError as exc:
        print(f'{name}: {exc}', file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def cmd_record(args) -> int:
    """Record topics into a rosbag2 (mcap or sqlite3) through raw subscriptions."""
    from asyncvla_ros.tools.record import record

    return _bag_command('record', lambda: record(args.output, args.topics, args.storage, args.duration, args.ros_args))


def cmd_replay(args) -> int:
    """Publish a rosbag2 with its recorded timing (rate, offset, loop, remapping, /clock)."""
    from asyncvla_ros.tools.replay import ReplayOptions, replay

    options = ReplayOptions(
        args.rate, args.start_offset, args.loop, args.topics, dict(args.remap), args.clock, args.startup_delay
    )
    return _bag_command('replay', lambda: replay(args.bag, options, args.ros_args))


def cmd_evaluate(args) -> int:
    """Run the policy open loop over a LeRobot dataset or a bag and report errors, calibration, speed."""
    from asyncvla_ros.control.profile import load_profile
    from asyncvla_ros.model.checkpoint import CheckpointError
    from asyncvla_ros.model.interface import Sampling
    from asyncvla_ros.model.runner import PolicyRunner
    from asyncvla_ros.nodes.params import POLICY_NODE, camera_topics_for
    from asyncvla_ros.tools.bags import BagError
    from asyncvla_ros.tools.evaluate import bag_source, dataset_source, evaluate, summary_keys, write_report
    from asyncvla_ros.training.lerobot_format import DatasetError

    defaults = POLICY_NODE.defaults()
    if args.closed_loop:
        return _evaluate_closed_loop(args, defaults)
    try:
        runner = PolicyRunner(args.checkpoint or '', device=args.device, seed=args.seed, compile=args.compile)
        stride = args.stride or runner.chunk_size
        if args.dataset:
            source = dataset_source(args.dataset, runner, stride)
        else:
            source = bag_source(
                args.bag,
                runner,
                stride,
                args.camera_topics or camera_topics_for(runner.camera_keys),
                args.joint_names or defaults['joint_names'],
                args.joint_topic,
                args.command_topic,
                args.instruction_topic,
                args.instruction or defaults['instruction'],
                load_profile(args.robot_profile),
            )
        print(f'evaluate: {len(source.queries)} chunks from {source.description}')
        metrics = evaluate(
            runner,
            source,
            Sampling(
                True,
                args.confidence_threshold,
                args.num_correction_rounds,
                args.num_denoise_steps,
                args.num_denoise_steps_afm,
            ),
        )
    except (BagError, DatasetError, CheckpointError, ValueError) as exc:  # ValueError: the robot profile
        print(f'evaluate: {exc}', file=sys.stderr)
        return 2
    checkpoint = str(args.checkpoint or 'the demo checkpoint')
    report = write_report(args.output, metrics, source, checkpoint, args.joint_names or defaults['joint_names'])
    print(
        f'evaluate: action_error {metrics["action_error"]:.4f} (SFM only {metrics["action_error_sfm"]:.4f}), '
        f'rater_spearman {metrics["rater_spearman"]:.3f} (within a step position '
        f'{metrics["rater_spearman_within_position"]:.3f} {metrics["rater_spearman_within_position_ci95"]}), '
        f"refined_fraction {metrics['refined_fraction']:.3f}, regenerated steps' error "
        f'{metrics["afm_error_before"]:.4f} -> {metrics["afm_error_after"]:.4f} after AFM, '
        f'latency p50 {metrics["latency_ms_p50"]:.1f} ms, realtime_factor {metrics["realtime_factor"]:.1f}; '
        f'wrote {report}'
    )
    print(json.dumps({k: metrics[k] for k in summary_keys(metrics)}))
    return 0


def _evaluate_closed_loop(args, defaults: dict) -> int:
    from asyncvla_ros.model.checkpoint import CheckpointError
    from asyncvla_ros.model.runner import PolicyRunner
    from asyncvla_ros.tools.closed_loop import (
        LoopSettings,
        evaluate_closed_loop,
        node_request_settings,
        summarize,
        sweep_runs,
        sweep_table,
        write_results,
        write_sweep,
    )

    latencies = args.latency_ms or []
    sweep = args.modes is not None or len(latencies) > 1
    if sweep and not latencies:
        print('evaluate: --modes needs --latency-ms (the delays to sweep)', file=sys.stderr)
        return 2
    request = node_request_settings(
        refill_threshold=args.refill_threshold,
        rate_hz=args.rate_hz,
        delay_compensation=args.delay_compensation == 'on',
        confidence_threshold=args.confidence_threshold,
        num_correction_rounds=args.num_correction_rounds,
        num_denoise_steps=args.num_denoise_steps,
        num_denoise_steps_afm=args.num_denoise_steps_afm,
    )
    settings = LoopSettings(
        args.instruction or defaults['instruction'],
        request,
        args.episode_seconds,
        latencies[0] / 1e3 if latencies else None,
        camera_rate_hz=args.camera_rate_hz,
        chunk_fade_per_lateness=args.chunk_fade_per_lateness,
        jpeg_quality=args.jpeg_quality,
        perturb=args.perturb,
    )
    if sweep:
        modes = args.modes or ['switch', 'fade', 'committed']
        runs = {
            name: (run, args.self_correction != 'off') for name, run in sweep_runs(settings, latencies, modes).items()
        }
    else:
        choices = {
            'on': {'self_correction': True},
            'off': {'sfm': False},
            'both': {'self_correction': True, 'sfm': False},
        }
        runs = {name: (settings, on) for name, on in choices[args.self_correction].items()}
    try:
        runner = PolicyRunner(args.checkpoint or '', device=args.device, seed=args.seed, compile=args.compile)
    except CheckpointError as exc:
        print(f'evaluate: {exc}', file=sys.stderr)
        return 2
    latency = "each inference's wall time" if not latencies else ', '.join(f'{ms:g}' for ms in latencies) + ' ms'
    print(
        f'evaluate: {args.closed_loop} simulated SO-101 episodes (scene seeds from {args.scene_seed}) per run, '
        f'{len(runs)} runs, ROS-free, latency {latency}, '
        + (f'camera at {args.camera_rate_hz:g} Hz' if args.camera_rate_hz else 'a fresh frame for each request')
        + (f', perturbed ({args.perturb})' if args.perturb else '')
    )
    results = evaluate_closed_loop(
        runner, runs, args.closed_loop, args.scene_seed, args.output / 'videos' if args.video else None
    )
    summary = summarize(results)
    description = {'checkpoint': str(args.checkpoint or 'the demo checkpoint'), 'settings': asdict(settings)}
    if sweep:
        rows = sweep_table(results, latencies, modes)
        table, plot = write_sweep(args.output, rows, 'asyncvla ' + ' '.join(sys.argv[1:]))
        description['sweep'] = rows
        print(table.read_text(), end='')
        print(f'evaluate: wrote {table} and {plot}')
    path = write_results(args.output, results, summary, description)
    for mode in results:
        print(
            f'evaluate: {mode}: success {summary[f"success_rate_{mode}"]:.2f}, how far episodes got '
            f'{summary[f"phases_{mode}"]}, p50 chunk {summary[f"p50_chunk_ms_{mode}"]:.0f} ms, '
            f'{summary[f"starved_s_{mode}"]:.1f} s held for want of a plan, '
            f'executed steps regenerated {summary[f"executed_regenerated_share_{mode}"]}'
        )
    print(f'evaluate: wrote {path}')
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith(('phases_', 'seams_'))}))
    return 0


def _delays(text: str) -> list[float]:
    """An argparse type: comma-separated delays in ms, none negative."""
    try:
        values = [float(part) for part in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a comma-separated list of numbers') from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f'{min(values):g} is below 0')
    return values


def _perturbation(text: str) -> str:
    """An argparse type: one of closed_loop.PERTURBATIONS (imported when given: it brings the sim)."""
    from asyncvla_ros.tools.closed_loop import PERTURBATIONS

    if text not in PERTURBATIONS:
        raise argparse.ArgumentTypeError(f'{text!r} is not one of {", ".join(PERTURBATIONS)}')
    return text


def _modes(text: str) -> list[str]:
    from asyncvla_ros.tools.closed_loop import execution_modes

    modes, known = text.split(','), execution_modes()
    unknown = [m for m in modes if m not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f'unknown mode(s) {unknown}: choose from {", ".join(known)}')
    return modes


def _at_least(minimum, kind, maximum=None):
    """An argparse type: `kind` values no smaller than `minimum` (and no larger than `maximum`, when given);
    a usage error otherwise."""

    def parse(text: str):
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f'{text} is below {minimum}')
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f'{text} is above {maximum}')
        return value

    return parse


def _float_or_auto(text: str):
    """An argparse type: `auto` or a number."""
    if text == 'auto':
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is neither auto nor a number') from None


def _remapping(text: str) -> tuple[str, str]:
    source, sep, target = text.partition(':=')
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f'{text!r} is not FROM:=TO')
    return source, target


def _node_flag(parser, param, **overrides):
    """`--<name>` for a node parameter: its default, choices, range and description come from the schema."""
    kind = {'int': int, 'double': float, 'string': str}[param.type]
    kwargs = {
        'default': param.default,
        'help': f'{param.description} (default: %(default)s, as the node)',
        'type': _at_least(param.range[0], kind, param.range[1]) if param.range else kind,
    }
    if param.choices:
        kwargs['choices'] = list(param.choices)
    parser.add_argument(f'--{param.name.replace("_", "-")}', **{**kwargs, **overrides})


def _add_training_commands(sub) -> None:
    from asyncvla_ros.training.trainer import TrainConfig

    make = sub.add_parser('make-dataset', help=cmd_make_dataset.__doc__)
    make.add_argument('--episodes', type=int, default=100)
    make.add_argument('--seed', type=int, default=0)
    make.add_argument('--image-size', type=int, default=224)
    make.add_argument('--output', type=Path, required=True)
    make.add_argument(
        '--recovery',
        action='store_true',
        help='episodes start where the expert turns back from a decoy beside the block',
    )
    make.add_argument(
        '--recovery-policy',
        type=Path,
        metavar='CHECKPOINT',
        help='recovery episodes start where this policy, run from home for 4-40 steps, left the arm',
    )
    make.set_defaults(func=cmd_make_dataset)
    for name, func in (('train', cmd_train), ('train-rater', cmd_train_rater)):
        p = sub.add_parser(name, help=func.__doc__)
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument('--data', type=Path, help='data YAML with lerobot_datasets entries')
        source.add_argument(
            '--dataset',
            type=Path,
            nargs='+',
            help='LeRobot v3.0 dataset roots (all cameras, state, action), equal shares of the samples',
        )
        p.add_argument('--steps', type=int, default=TrainConfig.steps if name == 'train' else 500)
        p.add_argument('--batch-size', type=int, default=TrainConfig.batch_size)
        p.add_argument('--lr', type=float, default=TrainConfig.lr)
        p.add_argument('--seed', type=int, default=TrainConfig.seed)
        p.set_defaults(func=func)
        if name == 'train-rater':
            p.add_argument('--checkpoint', type=Path, required=True)
            p.add_argument(
                '--output', type=Path, help='where to write the checkpoint with the trained rater (default: in place)'
            )
            continue
        p.add_argument('--output', type=Path, required=True)
        p.add_argument('--preset', default=TrainConfig.preset, choices=['tiny', 'small', 'qwen2.5-vl-3b'])
        p.add_argument(
            '--action-mode',
            default=TrainConfig.action_mode,
            choices=['delta', 'absolute'],
            help='delta: actions relative to the state each chunk starts from',
        )
        p.add_argument(
            '--afm-prefix-prob',
            type=_at_least(0.0, float, maximum=1.0),
            help='share of AFM samples with a committed prefix, as delay compensation sends '
            "(default: the preset's, or the --init-from checkpoint's)",
        )
        p.add_argument(
            '--chunk-size',
            type=_at_least(1, int),
            help="action steps a chunk (default: the --init-from or --resume checkpoint's, or the preset's); "
            'a fine-tuned checkpoint with another length needs train-rater again',
        )
        p.add_argument('--vision-lr', type=float, default=TrainConfig.vision_lr)
        p.add_argument('--image-size', type=int, default=TrainConfig.image_size)
        p.add_argument('--save-every', type=int, default=TrainConfig.save_every)
        p.add_argument('--validate-every', type=int, default=TrainConfig.validate_every)
        p.add_argument('--gradient-checkpointing', action='store_true')
        start = p.add_mutually_exclusive_group()
        start.add_argument('--resume', type=Path, help='a checkpoint-<step> directory of an earlier run')
        start.add_argument(
            '--init-from',
            type=Path,
            help='fine-tune this checkpoint (weights, processor, statistics) with a fresh schedule',
        )
    export = sub.add_parser('export', help=cmd_export.__doc__)
    export.add_argument('--checkpoint', type=Path, required=True)
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument('--output', type=Path, help='our checkpoint layout, weights in --dtype')
    target.add_argument(
        '--eo1', type=Path, metavar='DIR', help="EO-1's layout (float32, no rater), for EO-1's own tools"
    )
    export.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float16', 'float32'])
    export.set_defaults(func=cmd_export)
    imported = sub.add_parser('import-eo1', help=cmd_import_eo1.__doc__)
    imported.add_argument('source', type=Path, help='an EO-1 checkpoint directory (config.json, safetensors)')
    imported.add_argument('--output', type=Path, required=True)
    imported.add_argument(
        '--dtype',
        default='float32',
        choices=['bfloat16', 'float32'],
        help="the backbone's dtype; the action heads stay float32",
    )
    imported.set_defaults(func=cmd_import_eo1)


def _add_graph_commands(sub) -> None:
    from asyncvla_ros.nodes.params import EXECUTOR_NODE
    from asyncvla_ros.tools.record import DEFAULT_TOPICS

    bringup = sub.add_parser('bringup', help=cmd_bringup.__doc__)
    bringup.add_argument('target', choices=['sim', 'robot'])
    bringup.add_argument('--checkpoint', type=Path)
    _node_flag(bringup, EXECUTOR_NODE['robot_profile'])
    _node_flag(bringup, EXECUTOR_NODE['command_interface'])
    bringup.add_argument('--log-dir', type=Path, default=Path('runs/bringup'))
    bringup.add_argument(
        '--nodes',
        nargs='+',
        choices=['sim_arm', 'executor', 'policy'],
        help="only these of the target's nodes, for a graph on two hosts (default: all)",
    )
    bringup.add_argument(
        '--peers',
        nargs='+',
        metavar='ADDRESS',
        help='the other hosts: the two-host Fast DDS profile (config/fastdds_two_hosts.xml), discovering them '
        'as static peers; default: this host alone',
    )
    bringup.add_argument(
        '--respawn-policy',
        action='store_true',
        help=f'restart policy_node {RESPAWN_DELAY_S:g} s after it dies (launch: respawn_policy:=true)',
    )
    bringup.set_defaults(func=cmd_bringup)
    rec = sub.add_parser('record', help=cmd_record.__doc__)
    rec.add_argument('--output', '-o', type=Path, required=True, help='the bag directory to create')
    rec.add_argument(
        '--topics',
        nargs='+',
        default=list(DEFAULT_TOPICS),
        help='topic names or fnmatch patterns; relative ones are in the namespace (default: %(default)s)',
    )
    rec.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'])
    rec.add_argument('--duration', type=float, default=0.0, help='seconds to record (default: until Ctrl-C)')
    rec.set_defaults(func=cmd_record)
    play = sub.add_parser('replay', help=cmd_replay.__doc__)
    play.add_argument('bag', type=Path)
    play.add_argument('--rate', type=float, default=1.0)
    play.add_argument('--start-offset', type=float, default=0.0, help='seconds of the bag to skip')
    play.add_argument('--loop', action='store_true')
    play.add_argument('--topics', nargs='+', help='topics to publish (default: all)')
    play.add_argument('--remap', nargs='+', default=[], metavar='FROM:=TO', type=_remapping)
    play.add_argument(
        '--clock',
        type=float,
        default=0.0,
        metavar='HZ',
        help='publish /clock from the bag time at this rate, for nodes with use_sim_time',
    )
    play.add_argument('--startup-delay', type=float, default=1.0, help='seconds for discovery before playing')
    play.set_defaults(func=cmd_replay)


def _add_evaluate(sub) -> None:
    from asyncvla_ros.nodes.params import EXECUTOR_NODE, POLICY_NODE

    ev = sub.add_parser('evaluate', help=cmd_evaluate.__doc__)
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument('--dataset', type=Path, help='a LeRobot v3.0 dataset root')
    source.add_argument('--bag', type=Path, help='a rosbag2 (mcap or sqlite3)')
    source.add_argument(
        '--closed-loop',
        type=_at_least(1, int),
        metavar='EPISODES',
        help='drive the simulated SO-101 through the executor core for this many episodes, without ROS',
    )
    ev.add_argument('--checkpoint', type=Path, help='default: the demo checkpoint shipped with the package')
    ev.add_argument('--output', type=Path, required=True)
    ev.add_argument('--stride', type=int, default=0, help='steps between queries (default: the chunk size)')
    _node_flag(ev, POLICY_NODE['device'])
    _node_flag(ev, POLICY_NODE['compile'])
    ev.add_argument('--seed', type=int, default=POLICY_NODE['seed'].default, help='sampling noise seed')
    for name in ('confidence_threshold', 'num_correction_rounds', 'num_denoise_steps', 'num_denoise_steps_afm'):
        _node_flag(ev, POLICY_NODE[name])
    ev.add_argument('--camera-topics', nargs='+', help="bag: one per checkpoint camera (default: policy_node's)")
    ev.add_argument('--joint-names', nargs='+', help="default: policy_node's joint_names")
    _node_flag(ev, POLICY_NODE['robot_profile'])
    ev.add_argument('--joint-topic', default='/joint_states')
    ev.add_argument(
        '--command-topic',
        default='/arm_controller/joint_trajectory',
        help='bag: the recorded commands to compare with (joint states when absent)',
    )
    ev.add_argument('--instruction-topic', default='/asyncvla/instruction')
    ev.add_argument('--instruction', help="bag: when it has no instruction messages (default: policy_node's)")
    loop = ev.add_argument_group('closed loop')
    loop.add_argument('--scene-seed', type=int, default=1000, help='first scene seed (one per episode)')
    loop.add_argument('--episode-seconds', type=float, default=30.0)
    loop.add_argument(
        '--latency-ms',
        type=_delays,
        metavar='MS[,MS...]',
        help="fixed inference latency (default: each inference's wall time); several: a sweep over them",
    )
    loop.add_argument(
        '--modes',
        type=_modes,
        metavar='MODE[,MODE...]',
        help='a sweep: every (delay, mode) pair on the same scenes, with a table and a plot; modes: switch '
        '(a new chunk replaces the plan at once), fade (a late chunk fades in), committed (delay '
        'compensation, the rest spliced at once), committed_fade (both); default with several delays: '
        'switch, fade, committed',
    )
    loop.add_argument(
        '--self-correction',
        default='both',
        choices=['on', 'off', 'both'],
        help='both: a run with and one without; in a sweep, on unless off',
    )
    _node_flag(loop, POLICY_NODE['refill_threshold'])
    _node_flag(loop, POLICY_NODE['rate_hz'])
    loop.add_argument(
        '--delay-compensation',
        choices=['on', 'off'],
        default='on' if POLICY_NODE['delay_compensation'].default else 'off',
        help=f'{POLICY_NODE["delay_compensation"].description} (default: %(default)s, as the node)',
    )
    loop.add_argument(
        '--camera-rate-hz',
        type=_at_least(1.0, float),
        help='frames at this rate, each paired with the joints of its moment as policy_node does '
        '(default: a fresh frame for each request)',
    )
    _node_flag(loop, EXECUTOR_NODE['chunk_fade_per_lateness'])
    loop.add_argument(
        '--perturb',
        type=_perturbation,
        help='one disturbance an episode, drawn from its scene seed: block, the block nudged 1-3 cm as the gripper '
        'closes in; arm, the shoulder and elbow pushed 0.05-0.15 rad off their path between 1 and 4 s',
    )
    loop.add_argument(
        '--video',
        action='store_true',
        help='an MP4 of the front camera per episode and a contact sheet of key frames, in OUTPUT/videos',
    )
    loop.add_argument(
        '--jpeg-quality',
        type=_at_least(1, int, 100),
        help='frames through a JPEG round trip at this quality, as a compressed camera topic delivers them',
    )
    ev.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    from asyncvla_ros.nodes import params

    parser = argparse.ArgumentParser(prog='asyncvla', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('docs', help=cmd_docs.__doc__).set_defaults(func=cmd_docs)
    _add_training_commands(sub)
    _add_graph_commands(sub)
    _add_evaluate(sub)
    demo = sub.add_parser('demo', help='closed loop on the simulated SO-101 arm')
    demo.add_argument('--episodes', type=_at_least(1, int), default=20)
    demo.add_argument('--episode-seconds', type=float, default=30.0)
    demo.add_argument('--checkpoint', type=Path, help='default: the demo checkpoint shipped with the package')
    demo.add_argument(
        '--seed',
        type=int,
        default=1000,
        help='first scene seed (held out: the training recipes used scenes 0-149 and 10 000 000 on)',
    )
    demo.add_argument('--output', type=Path, default=Path('runs/demo'))
    demo.add_argument(
        '--real-time-factor',
        type=_float_or_auto,
        default='auto',
        help="sim seconds per wall second; below 1 the nodes run on the sim's /clock. auto: 1 when "
        'the policy runs on a GPU, a quarter of real time on the CPU (a chunk then costs the arm '
        'about what a GPU takes)',
    )
    _node_flag(demo, params.POLICY_NODE['compile'])
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    """Arguments after `--ros-args` go to rclpy (record, replay), as with `ros2 run`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index('--ros-args') if '--ros-args' in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    args.ros_args = argv[split:]
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
