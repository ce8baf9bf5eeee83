"""LeRobot dataset v3.0, read and written directly (lerobot itself cannot share our environment).

Layout: meta/info.json, meta/stats.json, meta/tasks.parquet, meta/episodes/chunk-000/file-000.parquet,
data/chunk-000/file-000.parquet (one row per frame), videos/<camera key>/chunk-000/file-000.mp4 (the
episodes one after another; each episode's from/to timestamps are in the episodes table).
Samples follow asyncvla_method.md §6: images, state and task at frame t, actions t..t+L-1 with
`action_is_pad` past the episode's end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
VIDEO_PATH = 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
EPISODES_PATH = 'meta/episodes/chunk-000/file-000.parquet'


class DatasetError(ValueError):
    """Bad data: the message names the file."""


# ----------------------------------------------------------------------------- writing
@dataclass
class LeRobotWriter:
    """Collects episodes in memory and writes one v3.0 dataset (one data file, one video per camera)."""

    root: Path
    fps: int
    robot_type: str = 'so101'
    joint_names: Sequence[str] = ()
    episodes: list = field(default_factory=list)

    def add_episode(self, images: dict[str, np.ndarray], state: np.ndarray, action: np.ndarray, task: str) -> None:
        """images: camera key -> (T, H, W, 3) uint8; state, action: (T, D) float."""
        length = len(state)
        if length == 0 or len(action) != length or any(len(v) != length for v in images.values()):
            raise DatasetError(f'episode {len(self.episodes)}: images, state and action need the same non-zero length')
        self.episodes.append(
            {
                'images': images,
                'state': np.asarray(state, np.float32),
                'action': np.asarray(action, np.float32),
                'task': task,
            }
        )

    def write(self) -> Path:
        """The dataset at `root`: parquet data and episode tables, tasks, one video a camera, info and stats."""
        root = Path(self.root)
        if not self.episodes:
            raise DatasetError(f'{root}: no episodes to write')
        (root / 'meta').mkdir(parents=True, exist_ok=True)
        tasks = sorted({e['task'] for e in self.episodes})
        frames = self._write_tables(root, tasks)
        shapes = {}
        for key in self.episodes[0]['images']:
            video = np.concatenate([e['images'][key] for e in self.episodes])
            shapes[key] = video.shape[1:]
            write_video(root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), video, self.fps)
        info = {
            'codebase_version': 'v3.0',
            'robot_type': self.robot_type,
            'total_episodes': len(self.episodes),
            'total_frames': frames,
            'total_tasks': len(tasks),
            'chunks_size': 1000,
            'data_files_size_in_mb': 100,
            'video_files_size_in_mb': 500,
            'fps': self.fps,
            'splits': {'train': f'0:{len(self.episodes)}'},
            'data_path': DATA_PATH,
            'video_path': VIDEO_PATH,
            'features': self._features(shapes),
        }
        (root / 'meta' / 'info.json').write_text(json.dumps(info, indent=2))
        (root / 'meta' / 'stats.json').write_text(json.dumps(self._stats(), indent=2))
        return root

    def _write_tables(self, root: Path, tasks: list[str]) -> int:
        """The frames, episodes and tasks parquet files; the number of frames."""
        task_index = {t: i for i, t in enumerate(tasks)}
        video_keys = list(self.episodes[0]['images'])
        rows, episode_rows, start, video_time = [], [], 0, 0.0
        for index, episode in enumerate(self.episodes):
            length = len(episode['state'])
            rows.append(
                pa.table(
                    {
                        'observation.state': list(episode['state']),
                        'action': list(episode['action']),
                        'timestamp': np.arange(length, dtype=np.float32) / self.fps,
                        'frame_index': np.arange(length),
                        'episode_index': np.full(length, index),
                        'index': np.arange(start, start + length),
                        'task_index': np.full(length, task_index[episode['task']]),
                    }
                )
            )
            row = {
                'episode_index': index,
                'tasks': [episode['task']],
                'length': length,
                'data/chunk_index': 0,
                'data/file_index': 0,
                'dataset_from_index': start,
                'dataset_to_index': start + length,
                'meta/episodes/chunk_index': 0,
                'meta/episodes/file_index': 0,
            }
            for key in video_keys:
                row[f'videos/{key}/chunk_index'] = row[f'videos/{key}/file_index'] = 0
                row[f'videos/{key}/from_timestamp'] = video_time
                row[f'videos/{key}/to_timestamp'] = video_time + length / self.fps
            episode_rows.append(row)
            start += length
            video_time += length / self.fps
        for path, table in (
            (DATA_PATH.format(chunk_index=0, file_index=0), pa.concat_tables(rows)),
            (EPISODES_PATH, pa.Table.from_pylist(episode_rows)),
            ('meta/tasks.parquet', pa.table({'task_index': list(range(len(tasks))), 'task': tasks})),
        ):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / path)
        return start

    def _features(self, shapes: dict) -> dict:
        state_dim, action_dim = self.episodes[0]['state'].shape[1], self.episodes[0]['action'].shape[1]
        names = list(self.joint_names) or [f'joint_{i}' for i in range(state_dim)]
        features = {
            'observation.state': {'dtype': 'float32', 'shape': [state_dim], 'names': names[:state_dim]},
            'action': {'dtype': 'float32', 'shape': [action_dim], 'names': names[:action_dim]},
            **{
                k: {'dtype': 'int64', 'shape': [1], 'names': None}
                for k in ('frame_index', 'episode_index', 'index', 'task_index')
            },
            'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
        }
        for key, (h, w, c) in shapes.items():
            video = {
                'video.height': h,
                'video.width': w,
                'video.codec': 'h264',
                'video.pix_fmt': 'yuv420p',
                'video.is_depth_map': False,
                'video.fps': self.fps,
                'video.channels': c,
                'has_audio': False,
            }
            features[key] = {
                'dtype': 'video',
                'shape': [h, w, c],
                'names': ['height', 'width', 'channels'],
                'info': video,
            }
        return features

    def _stats(self) -> dict:
        stats = {}
        for key, field_name in (('observation.state', 'state'), ('action', 'action')):
            values = np.concatenate([e[field_name] for e in self.episodes])
            stats[key] = {
                'mean': values.mean(0).tolist(),
                'std': values.std(0).tolist(),
                'min': values.min(0).tolist(),
                'max': values.max(0).tolist(),
                'count': [len(values)],
            }
        return stats


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('libx264', rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = 'yuv420p'
        stream.options = {'crf': '18', 'g': '2'}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
        container.mux(stream.encode())


def read_video(path: Path) -> np.ndarray:
    """All frames (N, H, W, 3) uint8 RGB."""
    try:
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])
    except (av.error.FFmpegError, ValueError) as exc:
        raise DatasetError(f'{path}: cannot decode the video ({exc})') from exc


# ----------------------------------------------------------------------------- reading
@dataclass
class DatasetSpec:
    """One `lerobot_datasets` entry of a data YAML (the EO-1 schema); no video keys: every camera."""

    root: Path
    repo_id: str = ''
    select_video_keys: Sequence[str] = ()
    select_state_keys: Sequence[str] = ('observation.state',)
    select_action_keys: Sequence[str] = ('action',)
    weight: float = 1.0


def load_data_config(path) -> list[DatasetSpec]:
    document = yaml.safe_load(Path(path).read_text()) or {}
    entries = document.get('lerobot_datasets')
    if not entries:
        raise DatasetError(f'{path}: no lerobot_datasets entries')
    base = Path(path).parent
    return [
        DatasetSpec(
            root=(base / e['root']).resolve() if not Path(e['root']).is_absolute() else Path(e['root']),
            **{k: v for k, v in e.items() if k != 'root'},
        )
        for e in entries
    ]


class LeRobotDataset:
    """Frames of a v3.0 dataset as training samples; videos are decoded once into memory."""

    def __init__(self, spec: DatasetSpec, chunk_size: int, episodes: Sequence[int] | None = None):
        root = Path(spec.root)
        self.info = self._json(root / 'meta' / 'info.json')
        self.fps = self.info.get('fps', 10)
        features = self.info.get('features', {})
        if not spec.select_video_keys:  # every camera of the dataset, in its order
            spec = dataclasses.replace(
                spec, select_video_keys=[k for k, f in features.items() if f.get('dtype') == 'video']
            )
        self.spec, self.chunk_size = spec, chunk_size
        for key in (*spec.select_video_keys, *spec.select_state_keys, *spec.select_action_keys):
            if key not in features:
                raise DatasetError(
                    f'{root / "meta/info.json"}: feature {key!r} not in the dataset ({sorted(features)})'
                )
        episodes_table = self._parquet(root / EPISODES_PATH)
        self.episodes = episodes_table.to_pylist()
        if episodes is not None:
            self.episodes = [e for e in self.episodes if e['episode_index'] in set(episodes)]
        if not self.episodes:
            raise DatasetError(f'{root / EPISODES_PATH}: no episodes')
        for e in self.episodes:
            if e['length'] <= 0:
                raise DatasetError(f'{root / EPISODES_PATH}: episode {e["episode_index"]} is empty')
        data = pa.concat_tables([self._parquet(p) for p in sorted((root / 'data').rglob('*.parquet'))])
        columns = {k: self._column(data, k, root) for k in (*spec.select_state_keys, *spec.select_action_keys)}
        self.state = np.concatenate([columns[k] for k in spec.select_state_keys], axis=1)
        self.action = np.concatenate([columns[k] for k in spec.select_action_keys], axis=1)
        self.task_index = data.column('task_index').to_numpy()
        self.episode_of = data.column('episode_index').to_numpy()
        tasks = self._parquet(root / 'meta' / 'tasks.parquet').to_pydict()
        self.tasks = dict(zip(tasks['task_index'], tasks.get('task', tasks.get('__index_level_0__', []))))
        self.frames = {key: self._episode_frames(root, key) for key in spec.select_video_keys}
        self.index = [(e['dataset_from_index'] + t, e) for e in self.episodes for t in range(e['length'])]
        stats = self._json(root / 'meta' / 'stats.json')
        self.stats = {
            'state': self._concat_stats(stats, spec.select_state_keys, root),
            'action': self._concat_stats(stats, spec.select_action_keys, root),
        }

    def _episode_frames(self, root: Path, key: str) -> dict[int, np.ndarray]:
        """Episode index -> its frames (T, H, W, 3), cut out of the shared video files by timestamp."""
        videos, frames = {}, {}
        for e in self.episodes:
            path = root / self.info['video_path'].format(
                video_key=key, chunk_index=e[f'videos/{key}/chunk_index'], file_index=e[f'videos/{key}/file_index']
            )
            if path not in videos:
                if not path.is_file():
                    raise DatasetError(f'{path}: video for {key!r} is missing')
                videos[path] = read_video(path)
            first = int(round(e[f'videos/{key}/from_timestamp'] * self.fps))
            clip = videos[path][first : first + e['length']]
            if len(clip) != e['length']:
                raise DatasetError(
                    f'{path}: episode {e["episode_index"]} needs {e["length"]} frames from {first}, '
                    f'the video has {len(videos[path])} (truncated or corrupt)'
                )
            frames[e['episode_index']] = clip
        return frames

    @staticmethod
    def _json(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f'{path}: cannot read ({exc})') from exc

    @staticmethod
    def _parquet(path: Path) -> pa.Table:
        try:
            return pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f'{path}: cannot read ({exc})') from exc

    @staticmethod
    def _column(table: pa.Table, key: str, root: Path) -> np.ndarray:
        if key not in table.column_names:
            raise DatasetError(f'{root / "data"}: column {key!r} missing (columns: {table.column_names})')
        values = np.asarray(table.column(key).to_pylist(), dtype=np.float32)
        return values.reshape(len(values), -1)

    @staticmethod
    def _concat_stats(stats: dict, keys, root: Path) -> dict:
        try:
            return {
                s: np.concatenate([np.asarray(stats[k][s], np.float32).ravel() for k in keys]).tolist()
                for s in ('mean', 'std')
            }
        except KeyError as exc:
            raise DatasetError(f'{root / "meta/stats.json"}: no statistics for {exc}') from exc

    def __len__(self) -> int:
        return len(self.index)

    def chunk_at(self, i: int) -> dict:
        """Sample `i` without its images: state, actions (L, A) and their padding mask."""
        row, episode = self.index[i]
        end = episode['dataset_to_index']
        steps = np.arange(row, row + self.chunk_size)
        return {
            'state': self.state[row],
            'actions': self.action[np.minimum(steps, end - 1)],
            'action_is_pad': steps >= end,
            'task': self.tasks[int(self.task_index[row])],
            'episode_index': int(self.episode_of[row]),
        }

    def __getitem__(self, i: int) -> dict:
        row, episode = self.index[i]
        t = row - episode['dataset_from_index']
        return {
            'images': [self.frames[k][episode['episode_index']][t] for k in self.spec.select_video_keys],
            **self.chunk_at(i),
        }
