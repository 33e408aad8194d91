# coding: utf-8
"""The parts of Hugging Face ``transformers``' T5 that differ between transformers 4.46 and 5.x, in one place.

TIGER, DiscRec and PRORec use T5 through :class:`~recbole_genrec.generative.t5.T5Backbone` and
:class:`~recbole_genrec.generative.incremental.IncrementalT5Decoder`.  Everything they need from ``transformers``
that is spelt differently across the supported range (``MIN_TRANSFORMERS`` up to the newest 5.x) goes through this
module.  Each difference is detected from the installed code (signatures and attributes), not from version numbers,
so a release that renames something back or forth is handled as what it is:

=====================================  ==============================================  ==================================
difference                             4.46.x                                          5.x
=====================================  ==============================================  ==================================
decoder-stack cache argument           ``T5Stack.forward(past_key_values=...)``,       ``cache=...`` (``past_key_values``
                                       no ``**kwargs`` (``cache=`` is a TypeError)     deprecated)
``DynamicCache`` constructor           ``DynamicCache(num_hidden_layers=None)``        ``DynamicCache(config=config)``
rescaling of tied decoder outputs      ``config.tie_word_embeddings``                  ``config.scale_decoder_outputs``
=====================================  ==============================================  ==================================

``EncoderDecoderCache`` itself (self-attention + cross-attention cache of a decoder) exists with the same
``self_attention_cache`` / ``batch_repeat_interleave`` / ``reorder_cache`` API on both lines and is re-exported
from here.
"""

import functools
import inspect
from typing import Dict, Optional

import transformers
from packaging.version import Version
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

__all__ = [
    "MIN_TRANSFORMERS",
    "EncoderDecoderCache",
    "check_transformers_version",
    "decoder_cache_kwargs",
    "new_encoder_decoder_cache",
    "scales_decoder_outputs",
]

# The lowest release the test suite passes on (`.ci/run`'s floor environment); pyproject.toml declares the same.
# 4.45 and older: T5 takes only legacy tuple caches (T5Backbone.decode with a cache fails); 4.46.0 is yanked.
MIN_TRANSFORMERS = "4.46.1"


def check_transformers_version(version: Optional[str] = None) -> None:
    """Raises ``ImportError`` naming the fix when the installed ``transformers`` (or ``version``) is below the floor."""
    found = version if version is not None else transformers.__version__
    if Version(found).release < Version(MIN_TRANSFORMERS).release:
        raise ImportError(
            f"recbole-genrec's generative models (TIGER, DiscRec, PRORec) need transformers>={MIN_TRANSFORMERS}, "
            f"found {found}. Upgrade it with: pip install 'transformers>={MIN_TRANSFORMERS}'"
        )


check_transformers_version()


@functools.lru_cache(maxsize=None)
def _forward_parameters(cls: type) -> frozenset:
    return frozenset(inspect.signature(cls.forward).parameters)


def decoder_cache_kwargs(decoder, cache: Optional[EncoderDecoderCache]) -> Dict[str, object]:
    """Keyword arguments that hand ``cache`` to the T5 decoder stack ``decoder``, whatever the stack calls it.

    Returns ``{"cache": cache}`` on stacks whose ``forward`` takes ``cache`` (transformers 5.x) and
    ``{"past_key_values": cache}`` on the older ones; ``use_cache`` is set to whether there is a cache.
    """
    params = _forward_parameters(type(decoder))
    if "cache" in params:
        name = "cache"
    elif "past_key_values" in params:
        name = "past_key_values"
    else:  # neither spelling: fail with what the stack does take instead of passing something it ignores
        raise TypeError(
            f"{type(decoder).__name__}.forward takes neither `cache` nor `past_key_values` "
            f"(transformers {transformers.__version__}; parameters: {sorted(params)})"
        )
    return {name: cache, "use_cache": cache is not None}


@functools.lru_cache(maxsize=None)
def _dynamic_cache_takes_config() -> bool:
    return "config" in inspect.signature(DynamicCache.__init__).parameters


def new_encoder_decoder_cache(decoder) -> EncoderDecoderCache:
    """An empty self-attention + cross-attention cache for the T5 decoder stack ``decoder``.

    Takes the stack, not a config: 5.x sizes the cache from ``config.num_layers``, which is the *decoder's* layer
    count only in the stack's own config (``T5ForConditionalGeneration.config.num_layers`` counts encoder layers).
    """
    if _dynamic_cache_takes_config():
        config = decoder.config
        return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


def scales_decoder_outputs(config) -> bool:
    """Whether T5 multiplies the decoder output by ``d_model ** -0.5`` before its (tied) LM head.

    transformers 5.x stores this as ``config.scale_decoder_outputs``; 4.x scales exactly when the word embeddings
    are tied (``config.tie_word_embeddings``, default True).
    """
    scale = getattr(config, "scale_decoder_outputs", None)
    if scale is not None:
        return bool(scale)
    return bool(getattr(config, "tie_word_embeddings", True))
