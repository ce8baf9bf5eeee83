"""The joint state of an image's moment. Cameras run slower than joint states (10-30 Hz against 100+ Hz),
so the newest joint state is up to a frame period younger than the newest image; feeding the two together
shows the policy an arm where the image does not. The demonstrations pair each frame with the joints of its
own time, and so does this: joint states are kept for a short while and read at the image's stamp, as
message_filters' ApproximateTime pairs messages, but interpolated between the two neighbours."""

from __future__ import annotations

from collections import deque

import numpy as np

OTHER_CLOCK_S = 10.0  # a frame stamped this far before its arrival (or after it) is on another clock


def frame_time(stamp: float, arrival: float) -> float:
    """When a frame was taken: its stamp, unless that is on another clock altogether (a bag replayed without
    /clock, a camera host whose clock was never set), where the arrival is the best guess. A stamp a little
    ahead of the arrival is a robot host whose clock runs ahead of this one: the stamp still dates the frame on
    the robot's clock, which the executor runs on."""
    return stamp if abs(arrival - stamp) <= OTHER_CLOCK_S else arrival


class ClockOffset:
    """How far this host's clock runs ahead of another's, from that host's message stamps: the quickest delivery
    over a window, arrival - stamp, is the offset plus the link's shortest transit. Negative: the other host is
    ahead. Its size beyond a tolerance means the hosts' clocks are not synchronised (or the link is that slow)."""

    def __init__(self, window: int = 50, min_samples: int = 5):
        self.deliveries: deque[float] = deque(maxlen=window)
        self.min_samples = min_samples

    def observe(self, stamp: float, arrival: float) -> None:
        self.deliveries.append(arrival - stamp)

    @property
    def estimate(self) -> float | None:
        return min(self.deliveries) if len(self.deliveries) >= self.min_samples else None


class JointHistory:
    """Recent joint states by stamp (seconds, non-decreasing; an older one restarts the history, as after a
    clock reset or a bag loop)."""

    def __init__(self, horizon_s: float = 2.0):
        self.horizon_s = horizon_s
        self.samples: deque[tuple[float, np.ndarray]] = deque()

    def add(self, stamp: float, positions: np.ndarray) -> None:
        if self.samples and stamp < self.samples[-1][0]:
            self.samples.clear()
        self.samples.append((stamp, np.asarray(positions, dtype=float)))
        while stamp - self.samples[0][0] > self.horizon_s:
            self.samples.popleft()

    @property
    def span(self) -> float:
        """Seconds between the oldest and the newest sample: the horizon once the history has filled."""
        return self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0

    def at(self, stamp: float) -> np.ndarray | None:
        """Positions at `stamp`: interpolated between the samples around it, the newest one for a later stamp;
        None when the history does not reach back that far (or is empty)."""
        if not self.samples or stamp < self.samples[0][0]:
            return None
        stamps = np.fromiter((s for s, _ in self.samples), float, len(self.samples))
        after = int(np.searchsorted(stamps, stamp, side='left'))
        if after == len(stamps):
            return self.samples[-1][1].copy()
        t1, q1 = self.samples[after]
        if after == 0 or t1 == stamp:
            return q1.copy()
        t0, q0 = self.samples[after - 1]
        return q0 + (q1 - q0) * (stamp - t0) / (t1 - t0)

    def pair(self, stamp: float) -> tuple[np.ndarray | None, str]:
        """(positions, note) for a frame stamped `stamp`: the positions of its moment; before the history has
        filled, None (wait for it); once filled and still not reaching back, the newest, with a warning (the
        frame and the joints are stamped on different clocks)."""
        positions = self.at(stamp)
        if positions is not None:
            return positions, ''
        if self.span < self.horizon_s:
            return None, 'no joint state from the time of the images yet'
        return self.samples[-1][1].copy(), (
            f'image stamps precede the joint-state history by more than {self.horizon_s:g} s: '
            'pairing the images with the newest joint state (are they stamped on one clock?)'
        )


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes (of the BGR image, as image_transport's compressed topics carry them)."""
    import cv2

    ok, data = cv2.imencode('.jpg', np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f'cannot JPEG-encode an image of shape {rgb.shape}')
    return data.tobytes()


def decode_image(data: bytes) -> np.ndarray | None:
    """JPEG or PNG bytes -> (H, W, 3) uint8 RGB; None when they do not decode."""
    import cv2

    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if decoded is None else np.ascontiguousarray(decoded[..., ::-1])


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """What a compressed camera topic delivers of a frame."""
    return decode_image(encode_jpeg(rgb, quality))
