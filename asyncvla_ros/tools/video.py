"""Episodes to watch: an MP4 per episode from the front camera, with the scene, mode, outcome and the task phase
burnt in, and a contact sheet of every episode's key frames (the first, the first of each new phase, the last).
The demo and `asyncvla evaluate --closed-loop --video` write them beside their reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VIDEO_CAMERA = 'front'
SCALE = 2  # the sim's cameras are 224x224: twice that for text that reads
MAX_KEY_FRAMES = 6


@dataclass
class EpisodeFrames:
    """One episode's front-camera frames (H, W, 3 uint8) and the task phase at each."""

    title: str  # scene and mode, e.g. 'scene 6103, self_correction'
    fps: float
    frames: list[np.ndarray] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # seconds from the episode's first frame

    def add(self, rgb: np.ndarray, phase: str) -> None:
        self.times.append(len(self.frames) / self.fps)
        self.frames.append(np.asarray(rgb, np.uint8))
        self.phases.append(phase)

    def key_only(self) -> EpisodeFrames:
        """The same episode with its key frames only (what the contact sheet shows), to keep many episodes."""
        keys = self.key_frames()
        return EpisodeFrames(
            self.title,
            self.fps,
            [self.frames[i] for i in keys],
            [self.phases[i] for i in keys],
            [self.times[i] for i in keys],
        )

    def key_frames(self) -> list[int]:
        """Indices of the first frame, the first of each new phase and the last (at most MAX_KEY_FRAMES: the
        last phase changes give way)."""
        if not self.frames:
            return []
        changes = [i for i in range(1, len(self.phases)) if self.phases[i] != self.phases[i - 1]]
        keys = [0, *changes[: MAX_KEY_FRAMES - 2], len(self.frames) - 1]
        return sorted(set(keys))


def outcome_text(success: bool, phase: str) -> str:
    return 'success' if success else f'failure ({phase})'


def captioned(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """`rgb` enlarged SCALE times with `lines` written at the top left, white on a darkened band."""
    import cv2

    image = cv2.resize(rgb, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    banner = 8 + 18 * len(lines)
    image[:banner] = (image[:banner] * 0.35).astype(np.uint8)  # darkened behind the text, whatever is filmed
    for row, text in enumerate(lines):
        origin = (6, 18 + 18 * row)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def write_video(path: Path, episode: EpisodeFrames, outcome: str) -> Path | None:
    """The episode as an H.264 MP4 (PyAV); None when it has no frames."""
    import av

    if not episode.frames:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = (np.array(episode.frames[0].shape[:2]) * SCALE).tolist()
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('libx264', rate=max(int(round(episode.fps)), 1))
        stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
        for rgb, phase, t in zip(episode.frames, episode.phases, episode.times):
            lines = [episode.title, f'{outcome}   t {t:4.1f} s   phase: {phase}']
            frame = av.VideoFrame.from_ndarray(captioned(rgb, lines), format='rgb24')
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_contact_sheet(path: Path, episodes: list[tuple[EpisodeFrames, str]]) -> Path | None:
    """One row per episode: its key frames, each titled with its phase and time; None without frames."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [(e, outcome) for e, outcome in episodes if e.frames]
    if not rows:
        return None
    columns = max(len(e.key_frames()) for e, _ in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.0 * columns, 2.2 * len(rows)), squeeze=False)
    for (episode, outcome), row in zip(rows, axes):
        for ax in row:
            ax.axis('off')
        for ax, index in zip(row, episode.key_frames()):
            ax.imshow(episode.frames[index])
            ax.set_title(f'{episode.phases[index]} {episode.times[index]:.1f} s', fontsize=7)
        row[0].text(
            -0.05, 0.5, f'{episode.title}\n{outcome}', transform=row[0].transAxes, ha='right', va='center', fontsize=7
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
