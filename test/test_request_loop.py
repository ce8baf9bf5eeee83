"""policy_node's request loop without ROS (control/request_loop.py): when a request is due, what it keeps
of the running chunk, how the delay is measured. policy_node and the closed-loop evaluation run it."""

from dataclasses import replace

import numpy as np
import pytest

from asyncvla_ros.control.request_loop import ExecutorProgress, RequestLoop
from asyncvla_ros.model.interface import ChunkPrediction
from asyncvla_ros.tools.closed_loop import node_request_settings

JOINTS = ['a', 'b']
DT, SIZE = 0.1, 8


def prediction(value=0.0):
    positions = np.full((SIZE, 2), value)
    return ChunkPrediction(positions, np.zeros(0), np.zeros(SIZE, bool), positions)


def first_chunk(loop, settings, now=0.0):
    pending = loop.request(now, settings, now, [], np.zeros(2), 'go', None)
    return loop.complete(pending, prediction(), now + 0.05, None)


def test_a_request_is_due_when_the_executor_runs_low_on_our_chunk_or_else_by_time():
    settings = node_request_settings(refill_threshold=2, rate_hz=0.0)
    loop = RequestLoop(JOINTS, DT, SIZE)
    assert loop.due(0.0, settings, None)  # nothing asked yet
    chunk = first_chunk(loop, settings)
    assert not loop.due(0.1, settings, ExecutorProgress(chunk.chunk_id, 2, 5, True))
    assert loop.due(0.1, settings, ExecutorProgress(chunk.chunk_id, 5, 2, True))
    # the executor runs another chunk (ours rejected): by the time our chunk would run low
    other = ExecutorProgress(chunk.chunk_id + 5, 0, 8, True)
    low_at = chunk.start_time + DT * (SIZE - 2)
    assert not loop.due(low_at - 0.01, settings, other) and loop.due(low_at, settings, other)
    fixed = replace(settings, rate_hz=5.0)
    assert not loop.due(0.1, fixed, None) and loop.due(0.2, fixed, None)


def test_a_slower_inference_is_asked_for_sooner():
    settings = node_request_settings(refill_threshold=0, rate_hz=0.0, delay_compensation=False)
    loop = RequestLoop(JOINTS, DT, SIZE)
    chunk = first_chunk(loop, settings)
    pending = loop.request(1.0, settings, 1.0, [], np.zeros(2), 'go', ExecutorProgress(chunk.chunk_id, 4, 3, True))
    loop.complete(pending, prediction(), 1.4, ExecutorProgress(chunk.chunk_id, 8, 0, True))  # 400 ms: 4 steps
    assert loop.delay.delay >= 3
    assert loop.due(2.0, settings, ExecutorProgress(loop.last_chunk.chunk_id, 5, 3, True))


@pytest.mark.parametrize(
    'compensate, executing, committed', [(True, True, True), (True, False, False), (False, True, False)]
)
def test_delay_compensation_keeps_the_running_steps_only_while_the_executor_runs_our_chunk(
    compensate, executing, committed
):
    settings = node_request_settings(delay_compensation=compensate)
    loop = RequestLoop(JOINTS, DT, SIZE)
    chunk = first_chunk(loop, settings)
    running = ExecutorProgress(chunk.chunk_id, 3, 4, executing)
    pending = loop.request(0.4, settings, 0.35, [], np.zeros(2), 'go', running)
    assert (pending.request.committed is not None) == committed
    if committed:
        assert pending.executor_step == 3 and pending.start_time <= 0.35 + DT
        before = loop.delay.steps
        loop.complete(pending, prediction(), 0.6, ExecutorProgress(chunk.chunk_id, 5, 2, True))
        assert loop.delay.steps == pytest.approx(0.5 * before + 0.5 * 2)  # smoothed: 2 steps ran meanwhile
    else:
        assert pending.start_time == pytest.approx(0.35 + 0.5 * DT)  # half a step after the observation


def test_chunk_ids_stay_ahead_of_what_the_executor_runs():
    settings = node_request_settings()
    loop = RequestLoop(JOINTS, DT, SIZE)
    first_chunk(loop, settings)
    pending = loop.request(0.5, settings, 0.5, [], np.zeros(2), 'go', ExecutorProgress(41, 0, 8, True))
    assert pending.chunk_id == 42
    chunk = loop.complete(pending, prediction(1.0), 0.6, None)
    assert chunk.chunk_id == 42 and loop.last_chunk is chunk and np.all(chunk.positions == 1.0)


@pytest.mark.parametrize('threshold, delay, asked_at', [(2, 0, 2), (2, 1, 2), (2, 3, 4), (0, 3, 4)])
def test_a_request_leaves_the_measured_delay_and_one_step_of_the_plan(threshold, delay, asked_at):
    """The chunk arrives `delay` steps after the request, while a step of the running plan is still ahead: the
    executor never runs out of plan waiting for it (an executor hold)."""
    settings = node_request_settings(refill_threshold=threshold, rate_hz=0.0, delay_compensation=False)
    loop = RequestLoop(JOINTS, DT, SIZE)
    chunk = first_chunk(loop, settings)
    loop.delay.steps = float(delay)
    assert loop.due(0.5, settings, ExecutorProgress(chunk.chunk_id, SIZE - asked_at - 1, asked_at, True))
    assert not loop.due(0.5, settings, ExecutorProgress(chunk.chunk_id, SIZE - asked_at - 2, asked_at + 1, True))


def test_an_answer_whose_observation_grew_too_old_during_inference_is_stale():
    settings = node_request_settings(max_chunk_age_s=1.0)
    loop = RequestLoop(JOINTS, DT, SIZE)
    pending = loop.request(10.0, settings, 9.9, [], np.zeros(2), 'go', None)
    assert loop.stale(pending, 10.8, settings) == ''  # 0.9 s after the frame: published
    assert 'observation is 2.10 s old' in loop.stale(pending, 12.0, settings)  # a 2 s stall: dropped
