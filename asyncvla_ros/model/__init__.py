"""AsyncVLA in PyTorch/transformers: configuration, modeling, rater, processing, tokenizers. No rclpy."""
from asyncvla_ros.model.checkpoint import load_checkpoint, save_checkpoint
from asyncvla_ros.model.configuration_asyncvla import AsyncVLAConfig
from asyncvla_ros.model.modeling_asyncvla import AsyncVLAPolicy, ChunkResult
from asyncvla_ros.model.processing_asyncvla import AsyncVLAProcessor

__all__ = ['AsyncVLAConfig', 'AsyncVLAPolicy', 'AsyncVLAProcessor', 'ChunkResult', 'load_checkpoint', 'save_checkpoint']
