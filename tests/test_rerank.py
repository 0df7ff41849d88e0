"""Re-ranking: the chain's fusion, and shape (mask IoU) re-ranking on crafted silhouettes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.cli import app
from lookalike.errors import SettingsError, UnknownNameError
from lookalike.index import MetadataStore, NewItem
from lookalike.localize import pack_silhouette
from lookalike.rerank import Candidate, Needs, QueryContext, QueryData, apply_chain, create_reranker

from .conftest import product_of

SIZE = 64


class _Fixed:
    """A re-ranker that scores candidates from a table."""

    def __init__(self, table: dict[int, float], weight: float, top_n: int = 10) -> None:
        self.name, self.table, self.weight, self.top_n = "fixed", table, weight, top_n
        self.needs = Needs()

    def rescore(self, query: QueryContext, candidates: list[Candidate]) -> np.ndarray:
        return np.array([self.table[c.id] for c in candidates])


def _candidates() -> list[Candidate]:
    return [Candidate(i, s, {"vector": s}) for i, s in [(1, 0.9), (2, 0.85), (3, 0.8)]]


def _context(store: object = None, blobs: dict[str, bytes] | None = None) -> QueryData:
    return QueryData(np.zeros(4, np.float32), blobs or {}, store, 4)


def test_weight_zero_reproduces_the_plain_ranking() -> None:
    ranked = apply_chain([_Fixed({1: 0.0, 2: 1.0, 3: 1.0}, weight=0.0)], _context(), _candidates())
    assert [c.id for c in ranked] == [1, 2, 3] and [c.score for c in ranked] == [0.9, 0.85, 0.8]
    assert ranked[1].scores == {"vector": 0.85, "fixed": 1.0}


def test_fusion_reorders_and_only_the_top_n() -> None:
    ranked = apply_chain([_Fixed({1: 0.0, 2: 1.0, 3: 1.0}, weight=0.5, top_n=2)], _context(), _candidates())
    assert [c.id for c in ranked] == [2, 1, 3]
    assert ranked[0].score == pytest.approx(0.925) and ranked[1].score == pytest.approx(0.45)
    assert "fixed" not in ranked[2].scores  # below the top N: untouched


def _square(lo: int, hi: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[lo:hi, lo:hi] = True
    return mask


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < radius**2


def test_mask_iou_lifts_the_candidate_with_the_same_shape(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path / "db.sqlite")
    shapes = {"round": _disc(20), "square": _square(12, 52), "small square": _square(24, 40)}
    ids = {}
    with store.transaction() as db:
        for name, shape in shapes.items():
            item = NewItem(name, None, name, np.zeros(4, np.float32), blobs={"silhouette": pack_silhouette(shape)})
            ids[name] = store.insert(db, item)
    settings = Settings().replace(
        **{"localize.enabled": True, "rerank.chain": ["mask_iou"], "rerank.mask_iou.weight": 0.5}
    )
    reranker = create_reranker("mask_iou", settings)
    candidates = [
        Candidate(ids["round"], 0.90, {"vector": 0.90}),
        Candidate(ids["small square"], 0.88, {"vector": 0.88}),
        Candidate(ids["square"], 0.86, {"vector": 0.86}),
    ]
    query = _context(store, {"silhouette": pack_silhouette(_square(12, 52))})
    ranked = apply_chain([reranker], query, candidates)
    assert [c.id for c in ranked] == [ids["square"], ids["round"], ids["small square"]]
    assert ranked[0].scores["iou"] == pytest.approx(1.0)
    assert ranked[1].scores["iou"] == pytest.approx(shapes["round"].sum() / 1600)  # the disc lies inside
    assert ranked[2].scores["iou"] == pytest.approx(256 / 1600)
    assert all(set(c.scores) == {"vector", "iou"} for c in ranked)
    store.close()


def test_mask_iou_needs_localisation_and_names_are_checked() -> None:
    with pytest.raises(SettingsError, match="'mask_iou'.*localize.enabled is False"):
        Settings().replace(**{"rerank.chain": ["mask_iou"]})
    settings = Settings().replace(**{"rerank.chain": ["colbert"]})
    with pytest.raises(UnknownNameError, match="Unknown re-ranker .colbert.; expected one of: archive, diffusion, "):
        create_reranker("colbert", settings)


@pytest.mark.slow
def test_engine_with_localisation_and_iou_reranking(tmp_path: Path, samples: Path) -> None:
    settings = Settings().replace(**{"localize.enabled": True, "rerank.chain": ["mask_iou"]})
    with Engine.create(tmp_path / "loc.index", settings) as engine:
        engine.add([samples / "catalog" / "Milk", samples / "catalog" / "Juice"], categories=None)
        query = samples / "queries" / "Bravo-Apple-Juice_012.jpg"
        result = engine.search(query, k=5)
        assert product_of(result[0].path) == "Bravo-Apple-Juice"
        assert all({"vector", "iou"} <= set(hit.scores) for hit in result)
        assert result.details["localization"]["found"] is True
        assert result.localization.cutout.size[0] == result.localization.cutout.size[1]
        assert {"localize", "embed", "rerank"} <= set(result.timings)
        assert engine.info()["dim"] == 2560  # whole image + cut-out


@pytest.mark.slow
def test_whole_image_features_keep_the_plain_vectors_and_add_silhouettes(tmp_path: Path, samples: Path) -> None:
    folders = [samples / "catalog" / "Milk", samples / "catalog" / "Juice"]
    query = samples / "queries" / "Bravo-Apple-Juice_012.jpg"
    shape_only = {"localize.enabled": True, "localize.features": "whole", "rerank.chain": ["mask_iou"]}
    indexes = {}
    for name, settings in (("plain", Settings()), ("shape", Settings().replace(**shape_only))):
        engine = Engine.create(tmp_path / f"{name}.index", settings)
        engine.add(folders, categories=None)
        indexes[name] = engine
    plain, engine = indexes["plain"], indexes["shape"]
    try:
        assert engine.info()["dim"] == 1280  # the whole image only
        ids = np.concatenate([chunk_ids for chunk_ids, _, _ in engine.store.vectors(1280)]).tolist()
        assert len(ids) == plain.info()["images"] > 0
        vectors, plain_vectors = engine.store.vectors_of(ids, 1280), plain.store.vectors_of(ids, 1280)
        for item_id in ids:
            np.testing.assert_allclose(vectors[item_id], plain_vectors[item_id], atol=1e-5)
        assert set(engine.store.blobs("silhouette", ids)) == set(ids)
        assert not plain.store.blobs("silhouette", ids)
        np.testing.assert_allclose(engine.embed([query]), plain.embed([query]), atol=1e-5)
        result = engine.search(query, k=5)
        assert product_of(result[0].path) == "Bravo-Apple-Juice"
        assert all({"vector", "iou"} <= set(hit.scores) for hit in result)
        assert 0.0 < result[0].scores["iou"] <= 1.0
        assert result.details["localization"]["found"] is True
    finally:
        plain.close()
        engine.close()


def test_segment_writes_the_cutout_and_the_mask(tmp_path: Path, samples: Path) -> None:
    image = samples / "queries" / "Oatly-Natural-Oatghurt_016.jpg"
    result = CliRunner().invoke(app, ["segment", str(image), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cutout, mask = tmp_path / "Oatly-Natural-Oatghurt_016_cutout.png", tmp_path / "Oatly-Natural-Oatghurt_016_mask.png"
    from PIL import Image

    assert Image.open(cutout).width == Image.open(cutout).height
    assert 0.05 < (np.asarray(Image.open(mask)) > 0).mean() < 0.95
