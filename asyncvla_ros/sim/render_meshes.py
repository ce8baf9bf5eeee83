"""A light copy of the SO-101 scene for the cameras: the same bodies and geoms, decimated visual meshes.

The SO-101 CAD meshes have hundreds of thousands of drawn triangles, and MuJoCo's software OpenGL (llvmpipe,
what a machine without a GPU renders with) pays for each of them on the CPU, which a small machine takes from
the policy. Quadric edge collapse (pymeshlab) to 5 % of the triangles, 25 % for the two jaw parts that fill the
wrist camera, keeps a frame nearly as it was and draws it several times faster (`bench/sim_render.py`, figures
in docs/results.md).
Physics keeps the full model; this one is only posed (`pose`) and drawn.

Decimation takes several seconds, so its result is cached under `$XDG_CACHE_HOME/asyncvla_ros` (numpy
arrays, no pickle), keyed by a hash of the source meshes and the settings.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

MESH_FRACTION = 0.05
CLOSE_UP_MESHES = {'moving_jaw_so101_v1': 0.25, 'wrist_roll_follower_so101_v1': 0.25}  # the wrist camera's view
MIN_TRIANGLES = 100


def cache_dir() -> Path:
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'asyncvla_ros'


def light_model(xml_path: Path, model):
    """The scene at `xml_path` (whose full compiled model is `model`) recompiled with decimated meshes.

    Vertices go back to each mesh file's own frame (MuJoCo recentres meshes at compile time), so the
    compiler places the decimated meshes where the full ones are."""
    import mujoco

    meshes = _decimated_meshes(model)
    spec = mujoco.MjSpec.from_file(str(xml_path))
    for mesh in spec.meshes:
        name = mesh.name or Path(mesh.file).stem
        vertices, faces = meshes[name]
        mesh.name, mesh.file = name, ''
        mesh.uservert = vertices.ravel()
        mesh.userface = faces.ravel()
    light = spec.compile()
    if (light.nq, light.nmocap, light.ngeom) != (model.nq, model.nmocap, model.ngeom):
        raise ValueError(f'{xml_path} does not compile to the simulated scene: the cameras would draw another one')
    for group, field in (
        ('quality', 'offsamples'),
        ('quality', 'shadowsize'),
        ('global_', 'offwidth'),
        ('global_', 'offheight'),
    ):  # what the plant set on its model: speed and image size
        setattr(getattr(light.vis, group), field, getattr(getattr(model.vis, group), field))
    return light


def pose(light, light_data, data) -> None:
    """Puts the light model in the physics state `data` (joints and mocap bodies), for drawing."""
    import mujoco

    light_data.qpos[:] = data.qpos
    light_data.mocap_pos[:] = data.mocap_pos
    light_data.mocap_quat[:] = data.mocap_quat
    mujoco.mj_kinematics(light, light_data)
    mujoco.mj_comPos(light, light_data)  # lights that track a body's centre of mass need it
    mujoco.mj_camlight(light, light_data)


def _source_meshes(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{mesh name: ((V, 3) float64 vertices in the mesh file's frame, (F, 3) int32 faces)} of `model`."""
    import mujoco

    meshes = {}
    for index in range(model.nmesh):
        vert = slice(model.mesh_vertadr[index], model.mesh_vertadr[index] + model.mesh_vertnum[index])
        face = slice(model.mesh_faceadr[index], model.mesh_faceadr[index] + model.mesh_facenum[index])
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, model.mesh_quat[index])
        vertices = model.mesh_vert[vert].astype(np.float64) @ rotation.reshape(3, 3).T + model.mesh_pos[index]
        meshes[model.mesh(index).name] = (vertices, model.mesh_face[face].astype(np.int32))
    return meshes


def _decimated_meshes(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    source = _source_meshes(model)
    key = hashlib.sha256(
        repr((MESH_FRACTION, sorted(CLOSE_UP_MESHES.items()), MIN_TRIANGLES, version('pymeshlab'))).encode()
    )
    for name in sorted(source):
        key.update(name.encode())
        for array in source[name]:
            key.update(np.ascontiguousarray(array).tobytes())
    path = cache_dir() / f'so101_render_meshes_{key.hexdigest()[:16]}.npz'
    try:
        with np.load(path, allow_pickle=False) as cached:
            return {name: (cached[f'{name}.vert'], cached[f'{name}.face']) for name in source}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # a damaged cache file is rebuilt
        print(f'sim: ignoring the render mesh cache {path}: {error}', flush=True)
    import pymeshlab

    meshes = {}
    for name, (vertices, faces) in source.items():
        target = max(int(len(faces) * CLOSE_UP_MESHES.get(name, MESH_FRACTION)), MIN_TRIANGLES)
        mesh_set = pymeshlab.MeshSet()
        mesh_set.add_mesh(pymeshlab.Mesh(vertices, faces))
        mesh_set.meshing_decimation_quadric_edge_collapse(
            targetfacenum=target, preservenormal=True, preserveboundary=True, planarquadric=True
        )
        light = mesh_set.current_mesh()
        meshes[name] = (light.vertex_matrix().astype(np.float32), light.face_matrix().astype(np.int32))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f'.{os.getpid()}.npz')
    np.savez(
        partial,
        **{
            f'{name}.{part}': array
            for name, (vert, face) in meshes.items()
            for part, array in (('vert', vert), ('face', face))
        },
    )
    os.replace(partial, path)  # atomic: processes that decimate at once never read half a file
    print(
        f'sim: decimated the SO-101 render meshes ({sum(len(f) for _, f in source.values())} -> '
        f'{sum(len(f) for _, f in meshes.values())} triangles), cached in {path}',
        flush=True,
    )
    return meshes
