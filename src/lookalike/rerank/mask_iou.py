"""Shape re-ranking: IoU of the query's and each candidate's silhouettes in the square-crop frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lookalike.rerank.base import Candidate, Needs, QueryContext, register_reranker
from lookalike.settings import Settings

SILHOUETTE = "silhouette"  # the blob name the offline stage stores


@register_reranker("mask_iou")
class MaskIoUReranker:
    name = "iou"
    needs = Needs(blobs=(SILHOUETTE,))

    def __init__(self, settings: Settings) -> None:
        self.top_n = settings.rerank.mask_iou.top_n
        self.weight = settings.rerank.mask_iou.weight

    def rescore(self, query: QueryContext, candidates: Sequence[Candidate]) -> np.ndarray:
        from lookalike.localize.silhouette import silhouette_iou

        mine = query.blobs.get(SILHOUETTE)
        if mine is None:
            return np.zeros(len(candidates))
        stored = query.stored.blobs(SILHOUETTE, [c.id for c in candidates])
        known = [c.id for c in candidates if c.id in stored]
        scores = dict(zip(known, np.atleast_1d(silhouette_iou(mine, [stored[i] for i in known])), strict=True))
        return np.array([scores.get(c.id, 0.0) for c in candidates])
