"""Local-feature geometric verification: SIFT matches that agree on one similarity transform.

Catalogue keypoints are extracted once at indexing time (on the cut-out object when localisation
is on), capped per image and stored compactly: float16 coordinates and uint8 descriptors. Online,
the query's keypoints are matched to each of the top N candidates' (Lowe's ratio test), RANSAC
fits a rotation + scale + translation, and the score is the inlier count, normalised to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from lookalike.rerank.base import Candidate, Needs, QueryContext, register_reranker
from lookalike.settings import Settings

BLOB = "sift"
MAX_SIDE = 512  # images are shrunk to this longer side before extraction: speed, and scale parity


@register_reranker("sift")
class SiftReranker:
    name = "sift"
    needs = Needs(blobs=(BLOB,), describes=True)

    def __init__(self, settings: Settings) -> None:
        own = settings.rerank.sift
        self.top_n, self.weight = own.top_n, own.weight
        self.max_keypoints, self.ratio = own.max_keypoints, own.ratio
        self.min_inliers, self.full_inliers = own.min_inliers, own.full_inliers
        self._extractor: Any = None
        self._matcher: Any = None

    def describe(self, image: Image.Image, localization: Any = None) -> dict[str, bytes]:
        target = localization.cutout if localization is not None else image
        return {BLOB: pack_features(*self._extract(target))}

    def rescore(self, query: QueryContext, candidates: Sequence[Candidate]) -> np.ndarray:
        mine = query.blobs.get(BLOB)
        if mine is None:
            return np.zeros(len(candidates))
        query_points, query_descriptors = unpack_features(mine)
        stored = query.stored.blobs(BLOB, [c.id for c in candidates])
        scores = np.zeros(len(candidates))
        for row, candidate in enumerate(candidates):
            if candidate.id in stored:
                inliers = self.inliers(query_points, query_descriptors, *unpack_features(stored[candidate.id]))
                scores[row] = self.normalise(inliers)
        return scores

    def inliers(self, points_a: np.ndarray, desc_a: np.ndarray, points_b: np.ndarray, desc_b: np.ndarray) -> int:
        """RANSAC inliers of a similarity transform fitted to the ratio-test matches from a to b."""
        import cv2

        if len(desc_a) < 2 or len(desc_b) < 2:
            return 0
        pairs = self._matcher_instance().knnMatch(desc_a.astype(np.float32), desc_b.astype(np.float32), k=2)
        good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < self.ratio * n.distance]
        if len(good) < 3:
            return 0
        source = points_a[[m.queryIdx for m in good]].astype(np.float32)
        target = points_b[[m.trainIdx for m in good]].astype(np.float32)
        _, mask = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=6.0)
        return int(mask.sum()) if mask is not None else 0

    def normalise(self, inliers: int) -> float:
        if inliers < self.min_inliers:
            return 0.0
        return min(1.0, inliers / self.full_inliers)

    def _extract(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        grey = image.convert("L")
        scale = min(1.0, MAX_SIDE / max(grey.size))
        if scale < 1.0:
            grey = grey.resize((round(grey.width * scale), round(grey.height * scale)), Image.Resampling.BILINEAR)
        if self._extractor is None:
            self._extractor = cv2.SIFT_create(nfeatures=self.max_keypoints)
        keypoints, descriptors = self._extractor.detectAndCompute(np.asarray(grey), None)
        if descriptors is None:
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
        keypoints, descriptors = keypoints[: self.max_keypoints], descriptors[: self.max_keypoints]
        points = np.array([kp.pt for kp in keypoints], dtype=np.float32) / scale
        return points, np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)

    def _matcher_instance(self) -> Any:
        import cv2

        if self._matcher is None:
            self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        return self._matcher


def pack_features(points: np.ndarray, descriptors: np.ndarray) -> bytes:
    """count (uint32) + float16 (x, y) per keypoint + 128 uint8 per descriptor."""
    count = np.array([len(points)], dtype=np.uint32).tobytes()
    return count + points.astype(np.float16).tobytes() + descriptors.astype(np.uint8).tobytes()


def unpack_features(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    count = int(np.frombuffer(data[:4], dtype=np.uint32)[0])
    points_end = 4 + count * 4
    points = np.frombuffer(data[4:points_end], dtype=np.float16).reshape(count, 2).astype(np.float32)
    descriptors = np.frombuffer(data[points_end:], dtype=np.uint8).reshape(count, 128)
    return points, descriptors
