"""AsyncVLA in PyTorch/transformers: configuration, modeling, rater, processing, tokenizers. No rclpy.

The names below load on first use (PEP 562), so that `asyncvla_ros.model.interface` and the parent side of
`inference_process` import without torch."""

from importlib import import_module

_EXPORTS = {
    'AsyncVLAConfig': 'configuration_asyncvla',
    'AsyncVLAPolicy': 'modeling_asyncvla',
    'ChunkResult': 'modeling_asyncvla',
    'AsyncVLAProcessor': 'processing_asyncvla',
    'load_checkpoint': 'checkpoint',
    'save_checkpoint': 'checkpoint',
    'import_eo1': 'eo1',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(import_module(f'{__name__}.{_EXPORTS[name]}'), name)
