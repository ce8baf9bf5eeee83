"""PolicyRunner in a child process, for policy_node: the node's callbacks (joint states at hundreds of Hz,
images, executor state) and inference then stop taking turns on one GIL (`bench/inference_gil.py` measures
what sharing it costs; docs/results.md has the figures).

The child is `python -m asyncvla_ros.model.inference_process`. Requests go to its stdin and replies come
back on a pipe of their own (its stdout and stderr stay the node's log), as frames of a JSON header and raw
array bytes: nothing is pickled. If the child dies, the request in flight fails with the reason and the
next request starts a new child.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import subprocess
import sys
import threading
from dataclasses import asdict
from typing import BinaryIO

import numpy as np

from asyncvla_ros.model.interface import CheckpointError, ChunkPrediction, ChunkRequest, Sampling

_FRAME = struct.Struct('<II')  # JSON header bytes, array payload bytes
_STOP_TIMEOUT_S = 5.0


def write_frame(stream: BinaryIO, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    """One message: `header` (JSON-serialisable) and numeric `arrays`, in one write."""
    arrays = {name: np.ascontiguousarray(a) for name, a in (arrays or {}).items()}
    blob = json.dumps({**header, '_arrays': [[n, a.dtype.str, list(a.shape)] for n, a in arrays.items()]}).encode()
    payload = b''.join(a.tobytes() for a in arrays.values())
    stream.write(_FRAME.pack(len(blob), len(payload)) + blob + payload)
    stream.flush()


def read_frame(stream: BinaryIO) -> tuple[dict, dict[str, np.ndarray]]:
    """The next message as (header, arrays); EOFError when the other side has closed the pipe."""
    header_size, payload_size = _FRAME.unpack(_read_exactly(stream, _FRAME.size))
    header = json.loads(_read_exactly(stream, header_size))
    payload = _read_exactly(stream, payload_size)
    arrays, offset = {}, 0
    for name, dtype, shape in header.pop('_arrays'):
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise ValueError(f'array {name!r} has dtype {dtype}: only numeric arrays travel')
        size = int(np.prod(shape)) * dtype.itemsize
        arrays[name] = np.frombuffer(payload, dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
        offset += size
    return header, arrays


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError('the other side closed the pipe')
    return data


def _encode_request(request: ChunkRequest) -> tuple[dict, dict]:
    arrays = {f'image{i}': np.asarray(image, np.uint8) for i, image in enumerate(request.images)}
    arrays['state'] = np.asarray(request.state, np.float64)
    if request.committed is not None:
        arrays['committed'] = np.asarray(request.committed, np.float64)
    return {
        'instruction': request.instruction,
        'sampling': asdict(request.sampling),
        'num_images': len(request.images),
    }, arrays


def _decode_request(header: dict, arrays: dict) -> ChunkRequest:
    images = [arrays[f'image{i}'] for i in range(header['num_images'])]
    return ChunkRequest(
        images,
        arrays['state'],
        header['instruction'],
        committed=arrays.get('committed'),
        sampling=Sampling(**header['sampling']),
    )


class InferenceProcess:
    """PolicyRunner's interface for policy_node (`predict`, `num_joints`, `chunk_size`, `dt`, `camera_keys`,
    `device`, `close`) with the model in a child process. Loading errors raise here as in PolicyRunner
    (CheckpointError with the same message); one request at a time."""

    def __init__(
        self,
        checkpoint: str = '',
        device: str = 'auto',
        dtype: str = 'auto',
        attn_implementation: str = 'auto',
        seed: int = 0,
        num_threads: int = 0,
        compile: str = 'eager',
    ):
        self._arguments = dict(
            checkpoint=str(checkpoint),
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            seed=seed,
            num_threads=num_threads,
            compile=compile,
        )
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        reply_read, reply_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, '-m', __name__, json.dumps(self._arguments), str(reply_write)],
                stdin=subprocess.PIPE,
                pass_fds=(reply_write,),
            )
        finally:
            os.close(reply_write)
        self._replies = os.fdopen(reply_read, 'rb')
        try:
            header, _ = read_frame(self._replies)
        except EOFError:
            raise RuntimeError(
                f'the inference process exited with code {self._stop()} before it was ready (its output is in this log)'
            ) from None
        if 'error' in header:
            self._stop()
            raise (CheckpointError if header['type'] == 'CheckpointError' else RuntimeError)(header['error'])
        self.num_joints, self.chunk_size, self.dt = header['num_joints'], header['chunk_size'], header['dt']
        self.camera_keys, self.device = header['camera_keys'], header['device']

    def predict(self, request: ChunkRequest) -> ChunkPrediction:
        with self._lock:
            if self._process is None:
                self._start()
            header, arrays = _encode_request(request)
            try:
                write_frame(self._process.stdin, header, arrays)
                reply, arrays = read_frame(self._replies)
            except (BrokenPipeError, EOFError):
                code = self._stop()
                raise RuntimeError(
                    f'the inference process died (exit code {code}); the next request starts a new one'
                ) from None
        if 'error' in reply:
            raise RuntimeError(f'{reply["type"]} in the inference process: {reply["error"]}')
        return ChunkPrediction(
            arrays['positions'], arrays['confidence'], arrays['refined'], arrays['sfm_positions'], reply['timings_ms']
        )

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> int | None:
        """Ends the child (EOF on its stdin, then a kill if it does not go); its exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        for stream in (process.stdin, self._replies):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            return process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


def serve(arguments: dict, requests: BinaryIO, replies: BinaryIO) -> int:
    """The child's loop: load, say ready (or why not), then one reply per request until stdin closes."""
    from asyncvla_ros.model.runner import PolicyRunner  # torch and transformers: the child's, never the node's

    try:
        runner = PolicyRunner(**arguments)
    except (CheckpointError, OSError, RuntimeError, ValueError) as exc:
        write_frame(replies, {'error': str(exc), 'type': type(exc).__name__})
        return 1
    write_frame(
        replies,
        {
            'num_joints': runner.num_joints,
            'chunk_size': runner.chunk_size,
            'dt': runner.dt,
            'camera_keys': list(runner.camera_keys),
            'device': str(runner.device),
        },
    )
    while True:
        try:
            header, arrays = read_frame(requests)
        except EOFError:
            return 0
        try:
            prediction = runner.predict(_decode_request(header, arrays))
        except Exception as exc:  # reported to the node, which keeps serving
            write_frame(replies, {'error': repr(exc), 'type': type(exc).__name__})
            continue
        write_frame(
            replies,
            {'timings_ms': prediction.timings_ms},
            {
                'positions': prediction.positions,
                'confidence': prediction.confidence,
                'refined': prediction.refined,
                'sfm_positions': prediction.sfm_positions,
            },
        )


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='[inference process] %(message)s')
    try:
        sys.exit(serve(json.loads(sys.argv[1]), sys.stdin.buffer, os.fdopen(int(sys.argv[2]), 'wb')))
    except (BrokenPipeError, KeyboardInterrupt):  # the node went away: nothing left to serve
        sys.exit(0)
