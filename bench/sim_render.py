"""What the simulated cameras cost: both SO-101 cameras drawn with the full CAD meshes and with the light
(decimated) render meshes, at the sim's image sizes, measured in one run over the same poses.

Ratio: light_speedup = full / light time for a frame pair. Last line: JSON.

    python bench/sim_render.py
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from asyncvla_ros.sim.so101 import CAMERAS, SO101Plant

POSES = ([0.0, 0.0, 0.0, 0.0, 0.0, 0.5], [0.3, 0.4, 0.2, 1.2, 0.0, 1.2], [-0.3, 0.6, 0.1, 1.3, 0.5, 0.2])


def frame_pair_ms(plant: SO101Plant, frames: int) -> float:
    """Mean milliseconds to capture and draw both cameras, over POSES."""
    elapsed = 0.0
    for pose in POSES:
        plant.set_targets(np.array(pose))
        plant.advance(1.0)
        plant.capture()
        [plant.draw(camera) for camera in CAMERAS]  # warm
        start = time.perf_counter()
        for _ in range(frames):
            plant.capture()
            [plant.draw(camera) for camera in CAMERAS]
        elapsed += time.perf_counter() - start
    return elapsed / (frames * len(POSES)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[112, 224])
    parser.add_argument('--frames', type=int, default=10, help='frame pairs per pose')
    args = parser.parse_args()
    result = {}
    for size in tqdm(args.sizes, desc='image sizes'):
        times = {}
        for light in (False, True):
            plant = SO101Plant(seed=1000, image_width=size, image_height=size, light_meshes=light)
            times['light' if light else 'full'] = frame_pair_ms(plant, args.frames)
            triangles = plant._drawn[0].nmeshface
            plant.close()
            print(
                f'{size} px, {"light" if light else "full"} meshes ({triangles} triangles): '
                f'{times["light" if light else "full"]:.1f} ms a frame pair'
            )
        result[f'light_speedup_{size}px'] = round(times['full'] / times['light'], 2)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
