"""The AsyncVLA model on the tiny preset, CPU, float32: KV-cache reuse, SFM/AFM, rater, training
losses, checkpoints and the offline tokenizers."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_model import tiny_policy

from asyncvla_ros.model import AsyncVLAConfig, AsyncVLAPolicy, load_checkpoint, save_checkpoint
from asyncvla_ros.model.checkpoint import CheckpointError
from asyncvla_ros.model.interface import Sampling
from asyncvla_ros.model.tokenizer import build_qwen_tokenizer

L, A = 8, 8


@pytest.fixture(scope='module')
def tiny():
    model, processor = tiny_policy()
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)] for _ in range(2)]
    inputs = processor(images, rng.normal(size=(2, 6)), ['pick up the red block', 'place it'])
    return model, processor, inputs


def test_tiny_preset_builds_fast():
    import time

    start = time.perf_counter()
    AsyncVLAPolicy(AsyncVLAConfig.from_preset('tiny'))
    assert time.perf_counter() - start < 1.0


def test_prompts_are_left_padded_and_the_prefix_is_right(tiny):
    model, processor, inputs = tiny
    mask = inputs['attention_mask']
    assert mask[0].all() != mask[1].all() and mask[:, -1].all()  # different lengths, padded on the left
    assert (inputs['input_ids'] == model.config.state_token_id).sum() == 2


@pytest.mark.parametrize('damage, message', [('image', 'image placeholder tokens'), ('state', 'one state token')])
def test_a_prompt_that_does_not_match_its_inputs_is_refused(tiny, damage, message):
    """Checked before the prefix pass, which a compiled model runs as one graph of fixed shapes."""
    model, _, inputs = tiny
    ids = inputs['input_ids'].clone()
    token = model.config.image_token_id if damage == 'image' else model.config.state_token_id
    first = int((ids[0] == token).nonzero()[0])
    ids[0, first] = ids[0, 0]  # one placeholder fewer
    with pytest.raises(ValueError, match=message):
        model.encode_prefix(**{**inputs, 'input_ids': ids})


def test_kv_cache_reuse_is_exact(tiny):
    """SFM on the cached prefix equals SFM with a full uncached pass per step, for the same noise."""
    model, _, inputs = tiny
    noise = torch.randn(2, L, A, generator=torch.Generator().manual_seed(1))
    cached = model.generate_chunk(**inputs, noise=noise, sampling=Sampling(self_correction=False)).actions
    x = noise.clone()
    steps = model.config.num_denoise_steps
    with torch.no_grad():
        for k in range(steps):
            hidden = model.full_sequence_hidden(**inputs, x=x, tau=torch.full((2, L), 1.0 - k / steps))
            x = x - model.action_out_proj(hidden[:, -L:]) / steps
    assert torch.allclose(cached, x, atol=1e-5), (cached - x).abs().max()


def test_afm_updates_only_masked_tokens(tiny):
    model, _, inputs = tiny
    with torch.no_grad():
        prefix = model.encode_prefix(**inputs)
        x = torch.randn(2, L, A)
        update = torch.zeros(2, L, dtype=torch.bool)
        update[0, [1, 5]] = True
        update[1, 7] = True
        out = model.denoise(prefix, x.clone(), update, 4)
    assert torch.equal(out[~update], x[~update])  # bit-exact
    assert (out[update] != x[update]).all()


def test_committed_prefix_is_kept_and_never_rated_or_refined(tiny):
    model, _, inputs = tiny
    committed = torch.randn(2, 3, A)
    result = model.generate_chunk(
        **inputs,
        committed=committed,
        num_committed=3,
        sampling=Sampling(confidence_threshold=1.0),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(result.actions[:, :3], committed)
    assert not result.refined[:, :3].any() and result.refined[:, 3:].all()
    assert torch.equal(result.confidence[:, :3], torch.ones(2, 3))


def test_threshold_zero_is_sfm_and_one_regenerates_everything(tiny):
    model, _, inputs = tiny
    noise = torch.randn(2, L, A, generator=torch.Generator().manual_seed(2))
    sfm = model.generate_chunk(**inputs, noise=noise, sampling=Sampling(self_correction=False)).actions
    none = model.generate_chunk(**inputs, noise=noise, sampling=Sampling(confidence_threshold=0.0))
    assert not none.refined.any() and torch.equal(none.actions, sfm)
    assert none.confidence is not None and none.timings_ms['afm_ms'] == 0.0
    everything = model.generate_chunk(**inputs, noise=noise, sampling=Sampling(confidence_threshold=1.0))
    assert everything.refined.all() and not torch.equal(everything.actions, sfm)
    assert torch.equal(everything.sfm_actions, sfm)


def test_afm_runs_its_own_number_of_steps(tiny):
    """num_denoise_steps_afm sets AFM's Euler steps independently of SFM's: the regenerated chunk is exactly a
    one-step denoise of the fresh noise, and the SFM chunk does not change."""
    model, _, inputs = tiny
    noise = torch.randn(2, L, A, generator=torch.Generator().manual_seed(3))
    one = model.generate_chunk(
        **inputs,
        noise=noise,
        sampling=Sampling(confidence_threshold=1.0, num_denoise_steps_afm=1),
        generator=torch.Generator().manual_seed(5),
    )
    ten = model.generate_chunk(
        **inputs,
        noise=noise,
        sampling=Sampling(confidence_threshold=1.0, num_denoise_steps_afm=10),
        generator=torch.Generator().manual_seed(5),
    )
    fresh = torch.randn(2, L, A, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model.denoise(model.encode_prefix(**inputs), fresh, torch.ones(2, L, dtype=torch.bool), 1)
    assert torch.allclose(one.actions, expected, atol=1e-6)
    assert torch.equal(one.sfm_actions, ten.sfm_actions) and not torch.allclose(one.actions, ten.actions)


@pytest.mark.parametrize('attention, first_token_changes', [('bidirectional', True), ('causal', False)])
def test_action_attention(attention, first_token_changes):
    model, processor = tiny_policy(action_attention=attention)
    inputs = processor([[np.zeros((56, 56, 3), np.uint8)]], np.zeros((1, 6)), ['pick up the red block'])
    x = torch.randn(1, L, A)
    tau = torch.full((1, L), 0.5)
    changed = x.clone()
    changed[0, -1] += 3.0
    with torch.no_grad():
        prefix = model.encode_prefix(**inputs)
        v, v_changed = model.velocity(prefix, x, tau), model.velocity(prefix, changed, tau)
        full, full_changed = (model.full_sequence_hidden(**inputs, x=a, tau=tau) for a in (x, changed))
    assert (not torch.allclose(v[0, 0], v_changed[0, 0])) == first_token_changes
    size = inputs['input_ids'].shape[1]
    assert torch.equal(full[:, :size], full_changed[:, :size])  # the prefix never sees the actions
    assert torch.allclose(full[:, :size], prefix.hidden, atol=1e-5)


def test_training_step_has_finite_loss_and_gradients_everywhere(tiny):
    model, _, inputs = tiny
    model.train()
    try:
        out = model(**inputs, actions=torch.randn(2, L, A), generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        assert torch.isfinite(out.loss)
        for name in (
            'vlm.language_model.layers.0.self_attn.q_proj.weight',
            'vlm.visual.blocks.0.attn.qkv.weight',
            'state_proj.weight',
            'action_in_proj.weight',
            'time_mlp.0.weight',
            'action_out_proj.1.weight',
        ):
            grad = model.get_parameter(name).grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_afm_loss_counts_only_masked_non_padded_steps(tiny):
    model, _, inputs = tiny
    actions, noise = torch.randn(2, L, A), torch.randn(2, L, A)
    flow_mask = torch.zeros(2, L, dtype=torch.bool)
    flow_mask[0, [0, 2, 6]] = True
    flow_mask[1, [1, 7]] = True
    is_pad = torch.zeros(2, L, dtype=torch.bool)
    is_pad[0, 6:] = True  # step 6 is masked but padded: not supervised
    tau = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        out = model(**inputs, actions=actions, action_is_pad=is_pad, flow_mask=flow_mask, tau=tau, noise=noise)
    target = noise - actions
    supervised = [(0, 0), (0, 2), (1, 1), (1, 7)]
    expected = sum(((out.velocity[b, t] - target[b, t]) ** 2).sum() for b, t in supervised) / (len(supervised) * A)
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_per_position_rater_labels_rank_steps_against_their_position():
    """Errors that grow with the step position: chunk-wide labels say 'later is worse', per-position labels say
    which chunk's step is worse (or better) than the batch's usual error at that position."""
    from asyncvla_ros.model.rater import rater_labels

    growth = torch.arange(1.0, L + 1)  # error scale per position
    extra = torch.ones(4, L)
    extra[0, 3], extra[1, 5] = 1.5, 0.3  # chunk 0 worse than usual at step 3, chunk 1 better at step 5
    predicted = torch.sqrt(growth * extra)[..., None].expand(4, L, A)
    target, valid = torch.zeros(4, L, A), torch.ones(4, L, dtype=torch.bool)
    chunk_wide = rater_labels(predicted, target, valid, A, 0.0, 1.0, 1e-9)
    per_position = rater_labels(predicted, target, valid, A, 0.0, 1.0, 1e-9, per_position=True)
    assert (chunk_wide[2].diff() < 0).all()  # a usual chunk: each later step rated worse
    assert per_position[0].argmin() == 3 and per_position[1].argmax() == 5
    assert per_position[0, 3] < per_position[0, 6] and chunk_wide[0, 3] > chunk_wide[0, 6]


def test_rater_training_leaves_the_policy_untouched(tiny):
    model, _, inputs = tiny
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('rater.')}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model.rater_loss(**inputs, actions=torch.randn(2, L, A), action_dims=6)
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith('rater.'))
    assert model.rater.head.weight.grad.abs().sum() > 0
    rater_before = model.rater.head.weight.clone()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(rater_before, model.rater.head.weight)


def test_checkpoint_round_trip_gives_identical_chunks(tiny, tmp_path):
    model, processor, inputs = tiny
    save_checkpoint(model, processor, tmp_path / 'ckpt')
    assert sorted(p.name for p in (tmp_path / 'ckpt').glob('*.safetensors')) == ['model.safetensors']
    loaded, loaded_processor = load_checkpoint(tmp_path / 'ckpt', device='cpu')
    again = loaded_processor(
        [[np.zeros((56, 56, 3), np.uint8)]] * 2, np.zeros((2, 6)), ['pick up the red block', 'place it']
    )
    first = processor([[np.zeros((56, 56, 3), np.uint8)]] * 2, np.zeros((2, 6)), ['pick up the red block', 'place it'])
    assert all(torch.equal(first[k], again[k]) for k in first)
    noise = torch.randn(2, L, A)
    a = model.generate_chunk(**first, noise=noise, generator=torch.Generator().manual_seed(3))
    b = loaded.generate_chunk(**again, noise=noise, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.actions, b.actions) and torch.equal(a.refined, b.refined)


def test_a_padded_prompt_gives_the_same_chunk(tiny):
    """Compiled generation pads prompts to a fixed length: the padding must change nothing."""
    model, processor, _ = tiny
    request = ([[np.full((56, 56, 3), 90, np.uint8)]], np.zeros((1, 6)), ['pick up the red block'])
    plain = processor(*request)
    processor.prompt_padding = 64
    try:
        padded = processor(*request)
    finally:
        processor.prompt_padding = 0
    assert padded['input_ids'].shape[1] % 64 == 0 and padded['input_ids'].shape[1] > plain['input_ids'].shape[1]
    noise = torch.randn(1, L, A)
    a = model.generate_chunk(**plain, noise=noise, generator=torch.Generator().manual_seed(3))
    b = model.generate_chunk(**padded, noise=noise, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a.actions, b.actions, atol=1e-5), (a.actions - b.actions).abs().max()


def test_compiled_generation_equals_eager(tiny_checkpoint):
    """Every compiled part runs (the rater, and AFM on every step at threshold 2) and gives eager's chunk;
    a second chunk reuses the compiled code."""
    from torch._dynamo.utils import counters

    eager, processor = load_checkpoint(tiny_checkpoint, device='cpu')
    compiled, compiled_processor = load_checkpoint(tiny_checkpoint, device='cpu', compile='default')
    request = ([[np.full((56, 56, 3), 90, np.uint8)]], np.zeros((1, 6)), ['pick up the red block'])
    inputs = compiled_processor(*request)
    assert inputs['input_ids'].shape[1] % 16 == 0
    sampling = Sampling(self_correction=True, confidence_threshold=2.0, num_denoise_steps=3, num_denoise_steps_afm=2)
    noise = torch.randn(1, L, A)

    def chunk(model):
        return model.generate_chunk(
            **inputs, noise=noise, sampling=sampling, generator=torch.Generator().manual_seed(3)
        )

    expected = chunk(eager)
    first = chunk(compiled)
    graphs = counters['stats']['unique_graphs']
    second = chunk(compiled)
    assert graphs > 0 and counters['stats']['unique_graphs'] == graphs  # compiled, and nothing compiled again
    for result in (first, second):
        assert result.refined.all()
        assert torch.allclose(result.actions, expected.actions, atol=1e-5), (
            (result.actions - expected.actions).abs().max()
        )
        assert torch.allclose(result.confidence, expected.confidence, atol=1e-5)


def test_unknown_compile_mode_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match='compile must be one of'):
        load_checkpoint(tiny_checkpoint, device='cpu', compile='fast')


@pytest.mark.parametrize(
    'damage, message',
    [
        ('pickle', 'pickle files can run code'),
        ('missing_tensor', 'does not match'),
        ('wrong_action_dim', 'cannot load|does not match'),
        ('no_weights', 'missing model.safetensors'),
        ('processor_mismatch', 'processor does not match'),
    ],
)
def test_broken_checkpoints_fail_clearly(tiny, tmp_path, damage, message):
    model, processor, _ = tiny
    path = save_checkpoint(model, processor, tmp_path / 'ckpt')
    if damage == 'pickle':
        (path / 'pytorch_model.bin').write_bytes(b'\x80\x04not really')
    elif damage == 'missing_tensor':
        tensors = load_file(path / 'model.safetensors')
        tensors.pop('action_out_proj.1.weight')
        save_file(tensors, path / 'model.safetensors', metadata={'format': 'pt'})
    elif damage == 'wrong_action_dim':
        config = json.loads((path / 'config.json').read_text())
        config['max_action_dim'] = 12
        (path / 'config.json').write_text(json.dumps(config))
    elif damage == 'no_weights':
        (path / 'model.safetensors').unlink()
    elif damage == 'processor_mismatch':
        settings = json.loads((path / 'asyncvla_processor.json').read_text())
        settings['action_chunk_size'] = 4
        (path / 'asyncvla_processor.json').write_text(json.dumps(settings))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, device='cpu')


def test_bfloat16_keeps_the_action_and_rater_modules_in_float32(tiny_checkpoint):
    """What `dtype: auto` gives on a GPU, checked on the CPU through the runner policy_node uses: the
    backbone in bfloat16, the small state, action and rater modules in float32 (they take float32
    inputs), and chunks close to float32's."""
    from asyncvla_ros.model.runner import ChunkRequest, PolicyRunner

    full = PolicyRunner(tiny_checkpoint, device='cpu', dtype='float32', seed=3)
    half = PolicyRunner(tiny_checkpoint, device='cpu', dtype='bfloat16', seed=3)
    kept = ('state_proj', 'action_in_proj', 'time_mlp', 'action_out_proj', 'rater')
    params = dict(half.model.named_parameters())
    assert {p.dtype for n, p in params.items() if n.split('.')[0] in kept} == {torch.float32}
    assert {p.dtype for n, p in params.items() if n.startswith('vlm.')} == {torch.bfloat16}
    image = np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8)
    request = ChunkRequest(
        [image], np.full(6, 0.2), 'pick up the red block', sampling=Sampling(confidence_threshold=0.5)
    )
    a, b = full.predict(request), half.predict(request)
    assert np.isfinite(b.positions).all() and np.isfinite(b.confidence).all()
    assert np.allclose(a.sfm_positions, b.sfm_positions, atol=0.01)


def test_attention_is_sdpa_by_default_and_flash_attention_2_is_refused():
    """FlashAttention-2 takes causal and padding masks only; the action tokens need a 4D mask."""
    from asyncvla_ros.model.checkpoint import ATTENTION_KERNELS, resolve_device
    from asyncvla_ros.nodes.params import POLICY_NODE

    assert resolve_device('cpu')[2] == 'sdpa' and resolve_device('cpu', 'auto', 'eager')[2] == 'eager'
    with pytest.raises(CheckpointError, match='4D attention mask'):
        resolve_device('cpu', 'auto', 'flash_attention_2')
    assert POLICY_NODE['attn_implementation'].choices == ('auto', *ATTENTION_KERNELS)


def test_num_threads_sets_the_cpu_thread_pool_and_zero_leaves_it(tiny_checkpoint):
    from asyncvla_ros.model.runner import PolicyRunner

    before = torch.get_num_threads()
    try:
        PolicyRunner(tiny_checkpoint, device='cpu', num_threads=before + 1)
        assert torch.get_num_threads() == before + 1
        PolicyRunner(tiny_checkpoint, device='cpu', num_threads=0)
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


def test_cuda_requested_without_gpu_is_an_error(tiny, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    model, processor, _ = tiny
    with pytest.raises(CheckpointError, match='no CUDA'):
        load_checkpoint(save_checkpoint(model, processor, tmp_path / 'ckpt'), device='cuda')


def test_offline_qwen_tokenizer_matches_reference_ids():
    tokenizer = build_qwen_tokenizer()
    assert tokenizer('Hello, world!')['input_ids'] == [9707, 11, 1879, 0]
    assert tokenizer.convert_tokens_to_ids('<|image_pad|>') == 151655
    assert tokenizer('<|vision_start|><|image_pad|><|vision_end|>')['input_ids'] == [151652, 151655, 151653]


@pytest.mark.slow
def test_the_inference_process_gives_the_runners_chunks_and_survives_its_childs_death(tiny_checkpoint, tmp_path):
    """policy_node's default: the model in a child process. Same chunks as in-process for the same seed
    (committed steps included), loading errors as CheckpointError with the same reason, and a killed child
    fails the request in flight with the reason while the next request starts a new one."""
    from asyncvla_ros.model.inference_process import InferenceProcess
    from asyncvla_ros.model.runner import ChunkRequest, PolicyRunner

    local = PolicyRunner(tiny_checkpoint, device='cpu', seed=5)
    remote = InferenceProcess(tiny_checkpoint, device='cpu', seed=5)
    try:
        assert (remote.camera_keys, remote.chunk_size, remote.dt, remote.num_joints, remote.device) == (
            local.camera_keys,
            local.chunk_size,
            local.dt,
            local.num_joints,
            'cpu',
        )
        image = np.random.default_rng(1).integers(0, 255, (56, 56, 3), dtype=np.uint8)
        first = ChunkRequest(
            [image], np.full(6, 0.2), 'pick up the red block', sampling=Sampling(confidence_threshold=0.5)
        )
        a, b = local.predict(first), remote.predict(first)
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.refined, b.refined)
        assert np.array_equal(a.confidence, b.confidence) and set(b.timings_ms) == set(a.timings_ms)
        second = ChunkRequest(
            [image],
            np.full(6, 0.2),
            'pick up the red block',
            committed=a.positions[:3],
            sampling=Sampling(self_correction=False, num_denoise_steps=3),
        )
        a, b = local.predict(second), remote.predict(second)
        assert np.array_equal(a.positions, b.positions) and np.array_equal(b.positions[:3], second.committed)

        remote._process.kill()
        with pytest.raises(RuntimeError, match='inference process died'):
            remote.predict(first)
        assert remote.predict(first).positions.shape == (remote.chunk_size, 6)
        child = remote._process
        remote.close()
        assert child.poll() == 0 and remote._process is None
    finally:
        remote.close()
    with pytest.raises(CheckpointError, match='does not exist'):
        InferenceProcess(tmp_path / 'missing', device='cpu')
