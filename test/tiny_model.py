"""The tiny random-init policy the model tests use; torch only (no rclpy), so that the GPU tests run
where ROS is not installed (bench/gpu_check.sh)."""


def tiny_policy(seed=0, camera_keys=('front',), joints=6, **overrides):
    """A random-init tiny AsyncVLA with a small tokenizer and a 56x56 image processor (fast on CPU)."""
    import torch
    from transformers import Qwen2VLImageProcessorPil

    from asyncvla_ros.model import AsyncVLAConfig, AsyncVLAPolicy, AsyncVLAProcessor
    from asyncvla_ros.model.tokenizer import build_small_tokenizer, prompt_token_ids

    tokenizer = build_small_tokenizer(
        [
            'pick up the red block',
            'place it on the green target',
            'You are a helpful physical assistant. system user assistant',
        ],
        400,
    )
    ids = prompt_token_ids(tokenizer)
    torch.manual_seed(seed)
    model = AsyncVLAPolicy(AsyncVLAConfig.from_preset('tiny', vocab_size=512, **ids, **overrides)).eval()
    stats = {'mean': [0.1] * joints, 'std': [0.5] * joints}
    processor = AsyncVLAProcessor(
        tokenizer,
        Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56),
        {'state': stats, 'action': stats},
        list(camera_keys),
        model.config.action_chunk_size,
        model.config.max_state_dim,
        model.config.max_action_dim,
    )
    return model, processor
