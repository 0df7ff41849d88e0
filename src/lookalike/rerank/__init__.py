"""Re-rankers of the vector search's top candidates, one module each, and their fusion."""

from lookalike.rerank import mask_iou as _mask_iou  # noqa: F401  (registers "mask_iou")
from lookalike.rerank.base import (
    Candidate,
    QueryContext,
    Reranker,
    apply_chain,
    available_rerankers,
    chain_depth,
    create_reranker,
    register_reranker,
)

__all__ = [
    "Candidate",
    "QueryContext",
    "Reranker",
    "apply_chain",
    "available_rerankers",
    "chain_depth",
    "create_reranker",
    "register_reranker",
]
