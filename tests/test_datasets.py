"""Data set adapters on tiny fake layouts, and on the shared data when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.errors import LookalikeError
from lookalike.evaluate.datasets import (
    DATA_ENV_VAR,
    ETH80_QUERY_VIEWS,
    Dataset,
    DatasetNotFound,
    eth80,
    eth80_classification_split,
    eth80_entries,
    from_manifest,
    grocery_store,
    grocery_store_entries,
    require_dataset,
    shared_data_dir,
)
from lookalike.io.catalog import CatalogEntry
from lookalike.samples import sample_dir

REPO = Path(__file__).resolve().parents[1]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


# --- grocery store ----------------------------------------------------------------------------

HEADER = "Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int),Iconic Image Path (str),"
CLASSES_CSV = f"""\
{HEADER}Product Description Path (str)
Golden-Delicious,0,Apple,0,/iconic-images-and-descriptions/Fruit/Apple/Golden-Delicious/Golden-Delicious_Iconic.jpg,/x.txt
Granny-Smith,1,Apple,0,/iconic-images-and-descriptions/Fruit/Apple/Granny-Smith/Granny-Smith_Iconic.jpg,/y.txt
Arla-Milk,2,Milk,1,/iconic-images-and-descriptions/Packages/Milk/Arla-Milk/Arla-Milk_Iconic.jpg,/z.txt
"""


@pytest.fixture()
def grocery(tmp_path: Path) -> Path:
    """A grocery-store layout with 3 fine classes in 2 coarse classes: 4 train, 3 test, 1 val images."""
    dataset = tmp_path / "grocery-store" / "dataset"
    _touch(dataset / "classes.csv").write_text(CLASSES_CSV)
    (dataset / "train.txt").write_text(
        "train/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg, 0, 0\n"
        "train/Fruit/Apple/Golden-Delicious/Golden-Delicious_002.jpg, 0, 0\n"
        "train/Fruit/Apple/Granny-Smith/Granny-Smith_001.jpg, 1, 0\n"
        "train/Packages/Milk/Arla-Milk/Arla-Milk_001.jpg, 2, 1\n"
    )
    (dataset / "test.txt").write_text(
        "test/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg, 0, 0\n"
        "test/Fruit/Apple/Granny-Smith/Granny-Smith_001.jpg, 1, 0\n"
        "test/Packages/Milk/Arla-Milk/Arla-Milk_001.jpg, 2, 1\n\n"
    )
    (dataset / "val.txt").write_text("val/Packages/Milk/Arla-Milk/Arla-Milk_001.jpg, 2, 1\n")
    return tmp_path / "grocery-store"


def test_grocery_photo2photo(grocery: Path) -> None:
    data = grocery_store(grocery)
    assert (data.name, data.protocol, data.relevance) == ("grocery-store", "photo2photo (fine)", "item")
    assert len(data.queries) == 3 and len(data.gallery) == 4
    assert data.queries[0] == CatalogEntry(
        path=grocery / "dataset/test/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg",
        category="Apple",
        item="Golden-Delicious",
        split="test",
    )
    assert data.query_labels() == ["Golden-Delicious", "Granny-Smith", "Arla-Milk"]
    assert data.n_relevant() == [2, 1, 1]
    assert {e.split for e in data.gallery} == {"train"}


def test_grocery_photo2catalog_and_coarse_labels(grocery: Path) -> None:
    data = grocery_store(grocery, protocol="photo2catalog")
    assert [e.item for e in data.gallery] == ["Golden-Delicious", "Granny-Smith", "Arla-Milk"]
    iconic = grocery / "dataset/iconic-images-and-descriptions"
    assert data.gallery[2].path == iconic / "Packages/Milk/Arla-Milk/Arla-Milk_Iconic.jpg"
    assert data.n_relevant() == [1, 1, 1]
    coarse = grocery_store(grocery, protocol="photo2catalog", label="coarse")
    assert coarse.relevance == "category" and coarse.n_relevant() == [2, 2, 1]
    assert coarse.describe()["n_gallery_labels"] == 2


def test_grocery_splits_and_dataset_folder(grocery: Path) -> None:
    assert [e.split for e in grocery_store_entries(grocery, "val")] == ["val"]
    assert len(grocery_store_entries(grocery / "dataset", "iconic")) == 3  # the dataset/ folder works too
    with pytest.raises(LookalikeError, match="Unknown grocery-store split 'dev'"):
        grocery_store_entries(grocery, "dev")  # type: ignore[arg-type]


def test_grocery_errors_name_the_path(grocery: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match=f"{tmp_path / 'nowhere'}: not a grocery-store data set"):
        grocery_store(tmp_path / "nowhere")
    with pytest.raises(LookalikeError, match="Unknown grocery-store protocol 'photo2sketch'"):
        grocery_store(grocery, protocol="photo2sketch")  # type: ignore[arg-type]
    with pytest.raises(LookalikeError, match="Unknown grocery-store label 'medium'"):
        grocery_store(grocery, label="medium")  # type: ignore[arg-type]
    (grocery / "dataset/test.txt").unlink()
    with pytest.raises(DatasetNotFound, match=r"test\.txt: missing"):
        grocery_store(grocery)


def test_grocery_bad_lines(grocery: Path) -> None:
    listing = grocery / "dataset/train.txt"
    listing.write_text("a.jpg, 0, 0\nb.jpg 0 0\n")
    with pytest.raises(LookalikeError, match=r"train\.txt:2: expected 'path, fine_id, coarse_id'; got 'b.jpg 0 0'"):
        grocery_store_entries(grocery, "train")
    listing.write_text("a.jpg, 7, 0\n")
    with pytest.raises(LookalikeError, match=r"train\.txt:1: fine class id 7 is not in classes\.csv \(ids 0-2\)"):
        grocery_store_entries(grocery, "train")
    (grocery / "dataset/classes.csv").write_text("Name,ID\nx,0\n")
    with pytest.raises(LookalikeError, match="expected columns"):
        grocery_store_entries(grocery, "train")


# --- ETH-80 -----------------------------------------------------------------------------------

VIEWS = ("000-000", "045-090", "090-180")


@pytest.fixture()
def eth(tmp_path: Path) -> Path:
    """Two categories x two instances x three views; masks for all but cup2."""
    root = tmp_path / "eth80"
    for category in ("apple", "cup"):
        for number in (1, 2):
            folder = root / category / f"{category}{number}"
            for view in VIEWS:
                _touch(folder / f"{category}{number}-{view}.jpg")
                if f"{category}{number}" != "cup2":
                    _touch(folder / "masks" / f"{category}{number}-{view}.png")
    _touch(root / "cup" / "notes" / "readme.jpg")  # not an instance folder: ignored
    return root


def test_eth80_cross_view_retrieval(eth: Path) -> None:
    data = eth80(eth, query_views=("045-090",))
    assert (data.name, data.relevance) == ("eth80", "item")
    assert [e.item for e in data.queries] == ["apple1", "apple2", "cup1", "cup2"]
    assert len(data.gallery) == 8 and not {e.path.stem[-7:] for e in data.gallery} & {"045-090"}
    assert data.n_relevant() == [2, 2, 2, 2]
    first = data.queries[0]
    assert first == CatalogEntry(
        path=eth / "apple/apple1/apple1-045-090.jpg",
        category="apple",
        item="apple1",
        split="query",
        mask=eth / "apple/apple1/masks/apple1-045-090.png",
    )
    assert data.queries[3].mask is None  # cup2 has no masks
    assert {e.split for e in data.gallery} == {"gallery"}


def test_eth80_instances_and_views(eth: Path) -> None:
    data = eth80(eth, query_views=("000-000",), instances=[2])
    assert [e.item for e in data.queries] == ["apple2", "cup2"]
    rows = eth80_entries(eth, views=["090-180"])
    assert [(v, e.item) for v, e in rows] == [("090-180", i) for i in ("apple1", "apple2", "cup1", "cup2")]


def test_eth80_classification_split(eth: Path) -> None:
    train, test = eth80_classification_split(eth, train_instances=[1], test_instances=[2])
    assert {e.item for e in train} == {"apple1", "cup1"} and {e.split for e in train} == {"train"}
    assert {e.item for e in test} == {"apple2", "cup2"} and len(test) == 6
    with pytest.raises(LookalikeError, match=r"train and test instances overlap: \[2\]"):
        eth80_classification_split(eth, train_instances=[1, 2], test_instances=[2])


def test_eth80_errors(eth: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match=f"{tmp_path / 'missing'}: not a folder"):
        eth80(tmp_path / "missing")
    with pytest.raises(LookalikeError, match=r"apple1 has no view\(s\) \['066-027'"):
        eth80(eth)  # the default query views are not in this fake layout
    with pytest.raises(LookalikeError, match="every view is a query view"):
        eth80(eth, query_views=VIEWS)
    with pytest.raises(LookalikeError, match="expected one or more query views"):
        eth80(eth, query_views=())
    with pytest.raises(LookalikeError, match=r"apple has instances \[1, 2\]; asked for \[3\]"):
        eth80(eth, query_views=("000-000",), instances=[3])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFound, match="no ETH-80 instance folders"):
        eth80_entries(empty)


# --- manifests --------------------------------------------------------------------------------


def _manifest(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "cat" / "manifest.csv"
    _touch(path).write_text("path,item,category,split\n" + rows)
    return path


MANIFEST_ROWS = """\
g/a1.jpg,a,fruit,gallery
g/a2.jpg,a,fruit,Train
g/b1.jpg,b,fruit,catalog
q/a.jpg,a,fruit,query
q/b.jpg,b,fruit,TEST
i/a.jpg,a,fruit,iconic
v/a.jpg,a,fruit,
"""


def test_from_manifest_default_splits(tmp_path: Path) -> None:
    path = _manifest(tmp_path, MANIFEST_ROWS)
    data = from_manifest(path)
    assert data.name == "cat/manifest.csv" and data.root == path.parent
    assert [e.path.name for e in data.gallery] == ["a1.jpg", "a2.jpg", "b1.jpg"]
    assert [e.path for e in data.queries] == [path.parent / "q/a.jpg", path.parent / "q/b.jpg"]
    assert data.n_relevant() == [2, 1]


def test_from_manifest_chosen_splits_and_relevance(tmp_path: Path) -> None:
    path = _manifest(tmp_path, MANIFEST_ROWS)
    data = from_manifest(path, gallery_splits=["iconic"], relevance="category", name="mine")
    assert [e.path.name for e in data.gallery] == ["a.jpg"]
    assert data.name == "mine" and data.n_relevant() == [1, 1]


def test_from_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match=f"{tmp_path / 'none.csv'}: missing"):
        from_manifest(tmp_path / "none.csv")
    path = _manifest(tmp_path, MANIFEST_ROWS)
    with pytest.raises(LookalikeError, match=r"0 query and 3 gallery rows; the split column holds \['<none>', 'TEST'"):
        from_manifest(path, query_splits=["queries"])
    with pytest.raises(LookalikeError, match=r"both gallery and query: \['test'\]"):
        from_manifest(path, gallery_splits=["Test"])
    no_item = _manifest(tmp_path, "g/a.jpg,,fruit,gallery\nq/a.jpg,a,fruit,query\n")
    with pytest.raises(LookalikeError, match="1 gallery entries have no item"):
        from_manifest(no_item)


def test_dataset_checks_its_relevance_key() -> None:
    with pytest.raises(LookalikeError, match="relevance must be one of"):
        Dataset("x", "p", (), (), relevance="colour")  # type: ignore[arg-type]


def test_bundled_sample_manifest() -> None:
    manifest = sample_dir() / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"{manifest} is absent")
    photos, catalogue = from_manifest(manifest), from_manifest(manifest, gallery_splits=["iconic"])
    assert (len(photos.queries), len(photos.gallery), len(catalogue.gallery)) == (20, 60, 10)
    assert all(n > 0 for n in photos.n_relevant() + catalogue.n_relevant())


# --- shared data ------------------------------------------------------------------------------


def test_shared_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    assert shared_data_dir() == REPO.parent / "shared" / "data"
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert shared_data_dir() == tmp_path


def test_require_dataset_explains_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    with pytest.raises(DatasetNotFound, match=f"data set 'grocery-store' not found: {tmp_path / 'grocery-store'}"):
        require_dataset("grocery-store")
    (tmp_path / "grocery-store").mkdir()
    with pytest.raises(DatasetNotFound, match="is empty"):
        require_dataset("grocery-store")
    _touch(tmp_path / "grocery-store" / "README.md")
    assert require_dataset("grocery-store") == tmp_path / "grocery-store"
    assert issubclass(DatasetNotFound, FileNotFoundError)


def _shared(name: str) -> Path:
    try:
        return require_dataset(name)
    except DatasetNotFound as error:
        pytest.skip(str(error))


@pytest.mark.data
def test_real_grocery_store_counts() -> None:
    root = _shared("grocery-store")
    photos, catalogue = grocery_store(root), grocery_store(root, protocol="photo2catalog")
    assert (len(photos.gallery), len(photos.queries), len(catalogue.gallery)) == (2640, 2485, 81)
    assert len(grocery_store_entries(root, "val")) == 296
    assert len(set(catalogue.gallery_labels())) == 81
    assert len({e.category for e in catalogue.gallery}) == 43
    assert min(photos.n_relevant()) > 0 and min(catalogue.n_relevant()) == 1
    assert all(e.path.is_file() for e in catalogue.gallery + photos.queries[:50])


@pytest.mark.data
def test_real_eth80_counts() -> None:
    root = _shared("eth80-dev")
    rows = eth80_entries(root)
    assert len(rows) == 8 * 5 * 41
    assert len({e.category for _, e in rows}) == 8 and len({e.item for _, e in rows}) == 40
    assert all(e.mask is not None for _, e in rows)
    data = eth80(root)
    assert (len(data.queries), len(data.gallery)) == (40 * len(ETH80_QUERY_VIEWS), 40 * (41 - 8))
    assert set(data.n_relevant()) == {33}
    train, test = eth80_classification_split(root)
    assert (len(train), len(test)) == (8 * 3 * 41, 8 * 2 * 41)
