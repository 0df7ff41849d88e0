"""Re-rankers of the vector search's top candidates, one module each, and their fusion."""

from lookalike.rerank import archive as _archive  # noqa: F401  (each module registers its re-ranker)
from lookalike.rerank import diffusion as _diffusion  # noqa: F401
from lookalike.rerank import mask_iou as _mask_iou  # noqa: F401
from lookalike.rerank import query_expansion as _query_expansion  # noqa: F401
from lookalike.rerank import sift as _sift  # noqa: F401
from lookalike.rerank import views as _views  # noqa: F401
from lookalike.rerank.base import (
    Candidate,
    Needs,
    QueryContext,
    QueryData,
    Reranker,
    apply_chain,
    available_rerankers,
    chain_depth,
    create_reranker,
    needed_blobs,
    register_reranker,
)

RERANKERS_NAMES = available_rerankers()

__all__ = [
    "RERANKERS_NAMES",
    "Candidate",
    "Needs",
    "QueryContext",
    "QueryData",
    "Reranker",
    "apply_chain",
    "available_rerankers",
    "chain_depth",
    "create_reranker",
    "needed_blobs",
    "register_reranker",
]
