"""Global image features: backbones, GeM pooling, L2 normalisation."""

from lookalike.embed import backbones as _backbones  # noqa: F401  (registers the built-in embedders)
from lookalike.embed.base import Embedder, ModelSpec, available_embedders, create_embedder, l2_normalize

__all__ = ["Embedder", "ModelSpec", "available_embedders", "create_embedder", "l2_normalize"]
