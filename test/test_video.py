"""Episode videos and the contact sheet (tools/video.py): real MP4s, read back with PyAV."""

import av
import numpy as np

from asyncvla_ros.tools.video import SCALE, EpisodeFrames, write_contact_sheet, write_video


def episode(phases, fps=10.0):
    frames = EpisodeFrames('scene 7, sfm', fps)
    for i, phase in enumerate(phases):
        frames.add(np.full((32, 48, 3), 10 * i, np.uint8), phase)
    return frames


def read_back(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format='rgb24') for frame in container.decode(video=0)]


def test_key_frames_are_the_first_each_new_phase_and_the_last():
    frames = episode(['none'] * 3 + ['reached'] * 4 + ['carried'] * 2 + ['placed'])
    assert frames.key_frames() == [0, 3, 7, 9]
    keyed = frames.key_only()
    assert keyed.phases == ['none', 'reached', 'carried', 'placed'] and keyed.times == [0.0, 0.3, 0.7, 0.9]
    assert keyed.key_frames() == [0, 1, 2, 3]  # the contact sheet shows them all
    many = episode([f'p{i}' for i in range(20)])
    assert len(many.key_frames()) == 6 and many.key_frames()[-1] == 19


def test_an_episode_video_has_every_frame_enlarged_with_its_caption(tmp_path):
    frames = episode(['none'] * 5 + ['reached'] * 5)
    path = write_video(tmp_path / 'videos' / 'sfm_7.mp4', frames, 'failure (reached)')
    decoded = read_back(path)
    assert len(decoded) == 10 and decoded[0].shape == (32 * SCALE, 48 * SCALE, 3)
    # the caption is burnt in at the top left; the rest of the frame is the camera's (dark here)
    assert decoded[0][:20, :80].max() > 200 and decoded[0][-10:].max() < 40
    assert write_video(tmp_path / 'empty.mp4', EpisodeFrames('none', 10.0), 'success') is None


def test_the_contact_sheet_has_a_row_per_episode(tmp_path):
    sheets = [(episode(['none', 'reached', 'placed']).key_only(), 'success'), (episode(['none'] * 4), 'failure')]
    path = write_contact_sheet(tmp_path / 'contact_sheet.png', sheets)
    assert path.stat().st_size > 1000
    assert write_contact_sheet(tmp_path / 'none.png', [(EpisodeFrames('x', 10.0), 'success')]) is None
