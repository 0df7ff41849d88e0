"""Query expansion, diffusion over the kNN graph and SIFT geometric verification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Engine, Settings
from lookalike.graph import knn_affinity, normalise_graph, solve_diffusion
from lookalike.index import MetadataStore, NewItem
from lookalike.rerank import Candidate, QueryData, apply_chain, create_reranker
from lookalike.rerank.diffusion import DiffusionMatrix
from lookalike.rerank.query_expansion import expand_query
from lookalike.rerank.sift import pack_features, unpack_features

from .conftest import product_of


def _store(
    tmp_path: Path, vectors: np.ndarray, blobs: list[dict[str, bytes]] | None = None
) -> tuple[MetadataStore, list[int]]:
    store = MetadataStore(tmp_path / "db.sqlite")
    with store.transaction() as db:
        ids = [
            store.insert(db, NewItem(f"img{i}", None, f"h{i}", vector, blobs=(blobs or [{}] * len(vectors))[i]))
            for i, vector in enumerate(vectors)
        ]
    return store, ids


def _angles(*degrees: float) -> np.ndarray:
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_diffusion_follows_the_manifold_on_a_hand_checked_graph(tmp_path: Path) -> None:
    # A chain A-B-C-D (about 20 degrees apart) and a pair E-F beside it. The query at 5 degrees is nearer
    # to E (40 degrees off) than to D (55), but only D is connected to it through the chain.
    # By hand, with alpha = 0.5 and gamma = 1: S_AB = S_CD = 1/sqrt(2), S_BC = 1/2, so the row of A in
    # (I - S/2)^-1 decreases along the chain, A > B > C > D, and is zero on E and F.
    names = ["A", "B", "C", "D", "E", "F"]
    vectors = _angles(0, 21, 40, 61, -35, -55)  # uneven steps: no ties in the kNN graph
    store, ids = _store(tmp_path, vectors)
    settings = Settings().replace(
        **{
            "rerank.diffusion.graph_k": 1,
            "rerank.diffusion.alpha": 0.5,
            "rerank.diffusion.query_k": 1,
            "rerank.diffusion.weight": 1.0,
            "rerank.diffusion.gamma": 1.0,
        }
    )
    reranker = create_reranker("diffusion", settings)
    reranker.refresh(store, 2, tmp_path, store.generation)
    query = _angles(5)[0]
    plain = [Candidate(i, float(v @ query), {"vector": float(v @ query)}) for i, v in zip(ids, vectors, strict=True)]
    plain.sort(key=lambda c: -c.score)
    assert [names[ids.index(c.id)] for c in plain] == ["A", "B", "C", "E", "D", "F"]
    ranked = apply_chain([reranker], QueryData(query, {}, store, 2), plain)
    order = [names[ids.index(c.id)] for c in ranked]
    assert order[:4] == ["A", "B", "C", "D"] and set(order[4:]) == {"E", "F"}
    assert ranked[4].scores["diffusion"] == 0.0
    assert (tmp_path / "diffusion" / "matrix.npz").exists()
    store.close()


def test_block_conjugate_gradients_match_the_dense_inverse() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(120, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised = normalise_graph(knn_affinity(vectors, 6, 3.0))
    expected = 0.01 * np.linalg.inv(np.eye(120) - 0.99 * normalised.toarray())
    np.testing.assert_allclose(solve_diffusion(normalised, 0.99, np.arange(120)), expected, atol=1e-6)
    matrix = DiffusionMatrix.build(np.arange(120) + 1000, vectors, 6, 0.99, 3.0, keep=120)
    combined = matrix.combine([1000, 1005], np.array([1.0, 0.5]), [1000 + j for j in range(120)])
    np.testing.assert_allclose(combined, expected[0] + 0.5 * expected[5], atol=1e-5)


def test_query_expansion() -> None:
    query = _angles(0)[0]
    neighbours = _angles(10, 20)
    expanded = expand_query(query, neighbours, alpha=1.0)
    weights = neighbours @ query
    manual = query + weights[0] * neighbours[0] + weights[1] * neighbours[1]
    np.testing.assert_allclose(expanded, manual / np.linalg.norm(manual), atol=1e-6)
    assert np.degrees(np.arctan2(expanded[1], expanded[0])) > 5  # pulled toward the neighbours


def _rotated_and_scaled(path: Path) -> Image.Image:
    image = Image.open(path).convert("RGB")
    small = image.resize((int(image.width * 0.7), int(image.height * 0.7)))
    turned = small.rotate(30, expand=True, fillcolor=(255, 255, 255))
    canvas = Image.new("RGB", image.size, "white")
    canvas.paste(turned, ((canvas.width - turned.width) // 2, (canvas.height - turned.height) // 2))
    return canvas


def test_sift_lifts_a_rotated_and_scaled_copy_to_the_top(tmp_path: Path, samples: Path) -> None:
    catalog = (
        sorted((samples / "catalog").rglob("*_001.jpg"))[:5] + sorted((samples / "catalog" / "Juice").iterdir())[:3]
    )
    target = samples / "catalog" / "Oatghurt" / "Oatly-Natural-Oatghurt_001.jpg"
    catalog = [p for p in catalog if p != target] + [target]
    settings = Settings().replace(**{"rerank.chain": ["sift"], "rerank.sift.weight": 0.5})
    reranker = create_reranker("sift", settings)
    blobs = [reranker.describe(Image.open(p).convert("RGB")) for p in catalog]
    store, ids = _store(tmp_path, np.eye(len(catalog), 4, dtype=np.float32), blobs)
    # the vector search put the right product last among the candidates
    candidates = [Candidate(i, 0.9 - 0.01 * rank, {"vector": 0.9 - 0.01 * rank}) for rank, i in enumerate(ids)]
    query = reranker.describe(_rotated_and_scaled(target))
    ranked = apply_chain([reranker], QueryData(np.zeros(4), query, store, 4), candidates)
    assert ranked[0].id == ids[-1] and ranked[0].scores["sift"] > 0.5
    assert sum(c.scores["sift"] > 0 for c in ranked[1:]) <= 1  # unrelated products rarely verify
    store.close()


def test_sift_blob_round_trip() -> None:
    points = np.array([[1.5, 2.0], [300.25, 40.0]], np.float32)
    descriptors = np.arange(256, dtype=np.uint8).reshape(2, 128)
    back_points, back_descriptors = unpack_features(pack_features(points, descriptors))
    np.testing.assert_allclose(back_points, points, atol=0.2)
    np.testing.assert_array_equal(back_descriptors, descriptors)


@pytest.mark.slow
def test_engine_runs_every_reranker_and_explains_each_hit(tmp_path: Path, samples: Path) -> None:
    settings = Settings().replace(**{"rerank.chain": ["qe", "diffusion", "sift"]})
    with Engine.create(tmp_path / "r.index", settings) as engine:
        engine.add([samples / "catalog" / "Milk", samples / "catalog" / "Juice", samples / "catalog" / "Oatghurt"])
        query = samples / "queries" / "Oatly-Natural-Oatghurt_016.jpg"
        result = engine.search(query, k=3)
        assert product_of(result[0].path) == "Oatly-Natural-Oatghurt"
        assert set(result[0].scores) == {"vector", "qe", "diffusion", "sift"}
        assert {"sift_features", "rerank"} <= set(result.timings)
        engine.remove([result[0].id])  # the diffusion matrix follows the catalogue
        assert result[0].id not in [h.id for h in engine.search(query, k=30)]


def test_search_by_id_hands_sift_the_query_keypoints(tmp_path: Path, samples: Path) -> None:
    """A catalogue image searched by id carries its stored keypoints: its rotated copy verifies."""
    target = samples / "catalog" / "Oatghurt" / "Oatly-Natural-Oatghurt_001.jpg"
    copy = tmp_path / "copy" / "Oatly-Natural-Oatghurt_copy.jpg"
    copy.parent.mkdir()
    _rotated_and_scaled(target).save(copy, quality=92)
    settings = Settings().replace(**{"rerank.chain": ["sift"]})
    with Engine.create(tmp_path / "s.index", settings) as engine:
        engine.add([samples / "catalog" / "Juice", samples / "catalog" / "Oatghurt"])
        engine.add([copy], categories="Oatghurt")
        by_id = engine.search_by_id(engine.find(target).id, k=5)
        by_file = engine.search(target, k=5)
    copy_id = next(hit for hit in by_file if hit.path == str(copy.resolve())).id
    assert next(hit for hit in by_file if hit.id == copy_id).scores["sift"] > 0.5
    match = next(hit for hit in by_id if hit.id == copy_id)
    assert match.scores["sift"] > 0.5, "the stored query keypoints must reach the SIFT re-ranker"
    assert "load" in by_id.timings
