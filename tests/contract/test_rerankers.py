"""One suite run over every registered re-ranker: a new re-ranker gets these tests for free.

Each re-ranker declares what it reads (`Needs`); the suite checks the declaration matches its
hooks, and runs it through the chain on a small store in which every read is checked against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Settings
from lookalike.errors import LookalikeError, UnknownNameError
from lookalike.index import MetadataStore, NewItem
from lookalike.localize.silhouette import pack_silhouette
from lookalike.rerank import RERANKERS_NAMES, Candidate, Needs, QueryData, apply_chain, create_reranker

DIM = 8
SETTINGS = Settings().replace(**{"localize.enabled": True})  # mask_iou needs localisation


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _square(size: int) -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[32 - size : 32 + size, 32 - size : 32 + size] = True
    return mask


def _photo(seed: int) -> Image.Image:
    """A textured picture (SIFT finds keypoints on it)."""
    pixels = np.random.default_rng(seed).integers(0, 255, size=(24, 24, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((192, 192), Image.Resampling.NEAREST)


def _blobs_for(reranker: object, seed: int) -> dict[str, bytes]:
    """Every blob a re-ranker may read, as the offline stage would store it."""
    blobs = {"silhouette": pack_silhouette(_square(8 + seed))}
    if reranker.needs.describes:  # type: ignore[attr-defined]
        blobs.update(reranker.describe(_photo(seed), None))  # type: ignore[attr-defined]
    return blobs


@pytest.fixture()
def store(tmp_path: Path) -> MetadataStore:
    opened = MetadataStore(tmp_path / "db.sqlite")
    yield opened
    opened.close()


def _fill(store: MetadataStore, reranker: object, vectors: np.ndarray) -> list[int]:
    with store.transaction() as db:
        return [
            store.insert(db, NewItem(f"img{i}", None, f"h{i}", vector, blobs=_blobs_for(reranker, i)))
            for i, vector in enumerate(vectors)
        ]


@pytest.mark.parametrize("name", RERANKERS_NAMES)
def test_declares_its_needs_and_hooks(name: str) -> None:
    reranker = create_reranker(name, SETTINGS)
    assert isinstance(reranker.needs, Needs)
    assert reranker.name and reranker.top_n >= 1 and 0.0 <= reranker.weight <= 1.0
    assert callable(getattr(reranker, "describe", None)) == reranker.needs.describes
    assert callable(getattr(reranker, "refresh", None)) == reranker.needs.catalogue
    if reranker.needs.describes:
        produced = reranker.describe(_photo(1), None)
        assert produced and set(produced) <= set(reranker.needs.blobs), "describe must store only declared blobs"


@pytest.mark.parametrize("name", RERANKERS_NAMES)
def test_rescores_within_its_declared_reads(name: str, store: MetadataStore, tmp_path: Path) -> None:
    reranker = create_reranker(name, SETTINGS)
    vectors = _unit(12, 0)
    ids = _fill(store, reranker, vectors)
    if reranker.needs.catalogue:
        reranker.refresh(store, DIM, tmp_path, store.generation)
    query_vector = vectors[3]
    scores = vectors @ query_vector
    order = np.argsort(-scores)
    candidates = [Candidate(ids[i], float(scores[i]), {"vector": float(scores[i])}) for i in order]
    query = QueryData(query_vector, _blobs_for(reranker, 3), store, DIM)
    own = np.asarray(reranker.rescore(query.context_for(reranker), candidates[: reranker.top_n]))
    assert own.shape == (min(reranker.top_n, len(candidates)),)
    assert np.all((own >= 0.0) & (own <= 1.0 + 1e-6)), f"{name} scores must lie in [0, 1], got {own}"
    assert own[0] >= np.median(own), f"{name}: the query's own stored image should score above the median"
    ranked = apply_chain([reranker], query, [Candidate(c.id, c.score, dict(c.scores)) for c in candidates])
    assert sorted(c.id for c in ranked) == sorted(ids)
    assert all(reranker.name in c.scores for c in ranked[: reranker.top_n])


@pytest.mark.parametrize("name", RERANKERS_NAMES)
def test_weight_zero_keeps_the_vector_order(name: str, store: MetadataStore, tmp_path: Path) -> None:
    section = "rerank." + name + ".weight"
    reranker = create_reranker(name, SETTINGS.replace(**{section: 0.0}))
    vectors = _unit(10, 1)
    ids = _fill(store, reranker, vectors)
    if reranker.needs.catalogue:
        reranker.refresh(store, DIM, tmp_path, store.generation)
    scores = vectors @ vectors[0]
    candidates = [Candidate(ids[i], float(scores[i]), {"vector": float(scores[i])}) for i in np.argsort(-scores)]
    expected = [c.id for c in candidates]
    ranked = apply_chain([reranker], QueryData(vectors[0], _blobs_for(reranker, 0), store, DIM), candidates)
    assert [c.id for c in ranked] == expected


def test_undeclared_reads_are_refused(store: MetadataStore) -> None:
    class Sneaky:
        name, top_n, weight, needs = "sneaky", 5, 0.5, Needs()

        def rescore(self, query: object, candidates: list[Candidate]) -> np.ndarray:
            query.stored.blobs("silhouette", [c.id for c in candidates])  # type: ignore[attr-defined]
            return np.zeros(len(candidates))

    ids = _fill(store, create_reranker("mask_iou", SETTINGS), _unit(3, 2))
    candidates = [Candidate(i, 0.5, {"vector": 0.5}) for i in ids]
    with pytest.raises(LookalikeError, match="'sneaky' reads stored data 'silhouette' that its needs do not declare"):
        apply_chain([Sneaky()], QueryData(np.zeros(DIM, np.float32), {}, store, DIM), candidates)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="expected one of: " + ", ".join(RERANKERS_NAMES)):
        create_reranker("colbert", SETTINGS)
