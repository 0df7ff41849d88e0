"""The REST server: every endpoint, its errors, its limits and its safety (FastAPI's TestClient)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'lookalike[server]'")

from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.cli import app as cli_app
from lookalike.errors import SettingsError
from lookalike.server import ServerSettings, create_app
from lookalike.server.queries import QueryCache, QueryRecord

from .conftest import assert_error, product_of

QUERY = "Bravo-Apple-Juice_012.jpg"


def upload(path: Path, name: str | None = None) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name or path.name, path.read_bytes(), "image/jpeg")}


@pytest.fixture(scope="module")
def client(built_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server over a private copy of the plain sample index (no localisation); read-only tests."""
    copy = tmp_path_factory.mktemp("server") / "samples.index"
    shutil.copytree(built_index, copy)
    with Engine.open(copy) as engine, TestClient(create_app(engine)) as test_client:
        yield test_client


@pytest.fixture()
def writable(engine: Engine) -> Iterator[TestClient]:
    """A server over a fresh copy of the sample index that allows writes, for tests that add and remove images."""
    with TestClient(create_app(engine, ServerSettings(warm_up=False, allow_writes=True))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def localised(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[TestClient]:
    """A small index with localisation, mask-IoU re-ranking and a classifier (Juice and Banana: 18 images)."""
    settings = Settings().replace(**{"localize.enabled": True, "rerank.chain": ["mask_iou"]})
    path = tmp_path_factory.mktemp("localised") / "loc.index"
    with Engine.create(path, settings) as engine:
        engine.add([samples / "catalog" / "Juice", samples / "catalog" / "Banana"], categories=["Juice", "Banana"])
        engine.train_classifier("logreg")
        with TestClient(create_app(engine)) as test_client:
            yield test_client


# -- status
def test_health_and_status(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["images"] == 60
    status = client.get("/api/status").json()
    assert status["index"]["images"] == 60
    assert status["index"]["categories"]["Juice"] == 12
    server = status["server"]
    assert server["max_upload_bytes"] == 10 * 1024 * 1024
    assert server["localization"] is False and server["rerankers"] == []
    assert server["rerank_switchable"] is True


def test_categories(client: TestClient) -> None:
    categories = {c["name"]: c["count"] for c in client.get("/api/categories").json()}
    assert categories == {"Apple": 12, "Banana": 6, "Juice": 12, "Milk": 12, "Oatghurt": 6, "Pepper": 6, "Tomato": 6}


def test_openapi_docs_and_the_page(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/items", "/api/items/{item_id}/similar", "/api/thumbnails/{item_id}"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'accept="image/*"' in page.text and 'capture="environment"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


# -- search
def test_search_by_upload_finds_the_product(client: TestClient, samples: Path) -> None:
    response = client.post("/api/search?k=5", files=upload(samples / "queries" / QUERY))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["query"] == QUERY and answer["k"] == 5 and len(answer["hits"]) == 5
    assert product_of(answer["hits"][0]["name"]) == "Bravo-Apple-Juice"
    hit = answer["hits"][0]
    assert hit["rank"] == 1 and hit["scores"]["vector"] == pytest.approx(hit["score"])
    assert hit["thumbnail_url"] == f"/api/thumbnails/{hit['id']}" and hit["overlay_url"] is None
    assert {"decode", "embed", "search", "total"} <= set(answer["timings_ms"])
    assert len(answer["query_id"]) == 32
    assert answer["cutout_url"] is None and answer["localization"] is None
    assert "/" not in hit["name"]  # server paths are not exposed


def test_search_in_one_category(client: TestClient, samples: Path) -> None:
    answer = client.post("/api/search?k=3&category=Milk", files=upload(samples / "queries" / QUERY)).json()
    assert answer["searched_categories"] == ["Milk"]
    assert [hit["category"] for hit in answer["hits"]] == ["Milk"] * 3


def test_search_parameters_are_checked(client: TestClient, samples: Path) -> None:
    files = upload(samples / "queries" / QUERY)
    assert_error(client.post("/api/search?k=101", files=files), 422, "invalid_request", "k must be between 1 and 100")
    assert_error(client.post("/api/search?k=0", files=files), 422, "invalid_request", "query parameter 'k'")
    assert_error(client.post("/api/search?category=Cars", files=files), 400, "bad_request", "'Cars'", "Juice")
    assert_error(client.post("/api/search"), 422, "invalid_request", "form field 'file'")


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("notes.txt", b"these are not pixels", "not an image"),
        ("empty.jpg", b"", "empty"),
        ("cut.jpg", None, "truncated"),
    ],
)
def test_bad_uploads_are_refused_by_name(
    client: TestClient, samples: Path, name: str, data: bytes | None, fragment: str
) -> None:
    if data is None:  # the first half of a real JPEG
        whole = (samples / "queries" / QUERY).read_bytes()
        data = whole[: len(whole) // 2]
    response = client.post("/api/search", files={"file": (name, data, "image/jpeg")})
    assert_error(response, 422, "invalid_image", f"upload {name!r}", fragment)


def test_uploads_over_the_limit_get_413(built_index: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.index"
    shutil.copytree(built_index, copy)
    settings = ServerSettings(max_upload_bytes=4096, warm_up=False, allow_writes=True)
    big = bytes(20_000)  # over the photo limit
    huge = bytes(1_200_000)  # over the request limit: one photo plus 1 MB for the form
    with Engine.open(copy) as engine, TestClient(create_app(engine, settings)) as small:
        declared = small.post("/api/search", files={"file": ("big.jpg", huge, "image/jpeg")})
        assert_error(declared, 413, "too_large", "exceeds the limit")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
            yield b"--b\r\nContent-Disposition: form-data; name=file; filename=big.jpg\r\n\r\n"
            for _ in range(1200):
                yield bytes(1000)
            yield b"\r\n--b--\r\n"

        streamed = small.post(
            "/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert_error(streamed, 413, "too_large", "more than")
        # photos larger than the photo limit, in requests within the overall limit
        for url, field in (("/api/search", "file"), ("/api/items", "files")):
            part = small.post(url, files={field: ("big.jpg", big, "image/jpeg")})
            assert_error(part, 413, "too_large", "upload 'big.jpg'", "4,096 bytes")


def test_search_by_catalogue_id(client: TestClient) -> None:
    items = client.get("/api/items?category=Juice&limit=1").json()["items"]
    query = items[0]
    answer = client.get(f"/api/items/{query['id']}/similar?k=4").json()
    assert answer["query"] == query["name"] and len(answer["hits"]) == 4
    assert query["id"] not in [hit["id"] for hit in answer["hits"]]
    assert product_of(answer["hits"][0]["name"]) == product_of(query["name"])
    assert_error(client.get("/api/items/99999/similar"), 404, "not_found", "99999")


def test_concurrent_searches_agree(client: TestClient, samples: Path) -> None:
    queries = sorted((samples / "queries").iterdir())[:4]
    alone = [client.post("/api/search?k=3", files=upload(q)).json()["hits"] for q in queries]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda q: client.post("/api/search?k=3", files=upload(q)).json()["hits"], queries))
    assert [[h["id"] for h in hits] for hits in together] == [[h["id"] for h in hits] for hits in alone]


# -- catalogue
def test_browse_pages_and_categories(client: TestClient) -> None:
    first = client.get("/api/items?limit=25").json()
    second = client.get("/api/items?limit=25&offset=50").json()
    assert first["total"] == 60 and len(first["items"]) == 25 and len(second["items"]) == 10
    juice = client.get("/api/items?category=Juice").json()
    assert juice["total"] == 12 and {item["category"] for item in juice["items"]} == {"Juice"}
    assert_error(client.get("/api/items?category=Cars"), 404, "not_found", "unknown category 'Cars'")
    assert_error(client.get("/api/items?limit=0"), 422, "invalid_request", "limit")
    item = juice["items"][0]
    assert client.get(f"/api/items/{item['id']}").json() == item


def test_images_and_cached_thumbnails(client: TestClient, samples: Path) -> None:
    item = client.get("/api/items?category=Milk&limit=1").json()["items"][0]
    original = client.get(item["image_url"])
    assert original.status_code == 200
    assert original.content == (samples / "catalog" / "Milk" / item["name"]).read_bytes()
    thumb = client.get(item["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 256
    index_path = Path(client.get("/api/status").json()["index"]["path"])
    assert list((index_path / "thumbnails").glob(f"{item['id']}_*_256.jpg"))
    assert client.get(item["thumbnail_url"]).content == thumb.content  # from the cache
    small = client.get(f"{item['thumbnail_url']}?size=128")
    assert max(Image.open(io.BytesIO(small.content)).size) == 128
    assert_error(client.get(f"{item['thumbnail_url']}?size=100"), 422, "invalid_request", "[128, 256, 512]")


@pytest.mark.parametrize("kind", ["images", "thumbnails", "silhouettes", "items"])
def test_unknown_ids_are_404(client: TestClient, kind: str) -> None:
    assert_error(client.get(f"/api/{kind}/99999"), 404, "not_found", "99999")


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/../../etc/passwd",
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/images/..%252F..%252Fetc%252Fpasswd",
        "/api/thumbnails/..%2F..%2Fsettings.json",
        "/api/images/1%2F..%2F..%2Fetc%2Fpasswd",
        "/api/images/%00",
        "/api/images/-1",
        "/api/images/0",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/pipeline.py",
        "/api/queries/..%2F..%2Fetc%2Fpasswd/cutout",
    ],
)
def test_no_path_traversal(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code in (404, 422), (url, response.status_code)
    assert "root:" not in response.text and "import" not in response.text
    if url.startswith("/api/"):
        assert response.json()["error"]["type"] in ("not_found", "invalid_request")


def test_errors_are_json_everywhere(client: TestClient) -> None:
    assert_error(client.get("/api/nothing-here"), 404, "not_found", "no such endpoint")
    assert_error(client.put("/api/health"), 405, "method_not_allowed")


# -- what the engine saw of a query
def test_query_parts_need_localisation(client: TestClient, samples: Path) -> None:
    answer = client.post("/api/search?k=2", files=upload(samples / "queries" / QUERY)).json()
    base = f"/api/queries/{answer['query_id']}"
    assert_error(client.get(f"{base}/cutout"), 404, "not_found", "has no cut-out")
    assert_error(client.get(f"{base}/overlay/{answer['hits'][0]['id']}"), 404, "not_found", "has no silhouette")
    assert_error(client.get("/api/queries/" + "0" * 32 + "/mask"), 404, "not_found", "unknown or expired")
    assert_error(client.get("/api/queries/not-an-id/mask"), 422, "invalid_request", "query_id")
    assert_error(client.get("/api/silhouettes/1"), 404, "not_found", "without localisation")


def test_query_cache_keeps_the_latest() -> None:
    cache = QueryCache(2)
    first, second = cache.put(QueryRecord("a")), cache.put(QueryRecord("b"))
    assert cache.get(first) is not None  # now the most recent
    cache.put(QueryRecord("c"))
    assert cache.get(second) is None and cache.get(first) is not None and len(cache) == 2


@pytest.mark.slow
def test_localised_search_shows_what_the_engine_saw(localised: TestClient, samples: Path) -> None:
    answer = localised.post("/api/search?k=3", files=upload(samples / "queries" / QUERY)).json()
    assert product_of(answer["hits"][0]["name"]) == "Bravo-Apple-Juice"
    assert answer["localization"]["found"] is True and answer["rerank"] is True
    assert {"vector", "iou"} <= set(answer["hits"][0]["scores"])
    cutout = Image.open(io.BytesIO(localised.get(answer["cutout_url"]).content))
    assert cutout.width == cutout.height <= 512
    mask = Image.open(io.BytesIO(localised.get(answer["mask_url"]).content))
    assert mask.mode == "L" and max(mask.size) <= 512
    silhouette = Image.open(io.BytesIO(localised.get(f"{answer['silhouette_url']}?scale=2").content))
    assert silhouette.size == (128, 128)
    hit = answer["hits"][0]
    overlay = localised.get(hit["overlay_url"])
    assert overlay.headers["content-type"] == "image/png"
    colours = {colour for _, colour in Image.open(io.BytesIO(overlay.content)).getcolors(1 << 16)}
    assert (60, 40, 120) in colours  # the overlap
    assert localised.get(hit["silhouette_url"]).status_code == 200

    assert answer["classification"]["category"] == "Juice" and answer["classification"]["gated"] is True
    assert answer["searched_categories"] == ["Juice"]
    status = localised.get("/api/status").json()
    assert status["classifier"]["state"] == "fresh" and status["server"]["rerankers"] == ["mask_iou"]

    url = "/api/search?k=3&rerank=false&gating=false"
    plain = localised.post(url, files=upload(samples / "queries" / QUERY)).json()
    assert plain["rerank"] is False and set(plain["hits"][0]["scores"]) == {"vector"}
    assert plain["searched_categories"] is None and plain["classification"]["gated"] is False
    by_id = localised.get(f"/api/items/{hit['id']}/similar?k=2").json()
    assert by_id["silhouette_url"] and by_id["cutout_url"] is None and by_id["hits"][0]["overlay_url"]


# -- adding and removing
def test_add_search_and_remove_an_upload(writable: TestClient, samples: Path) -> None:
    photo = samples / "queries" / "Oatly-Natural-Oatghurt_016.jpg"
    files = {"files": (photo.name, photo.read_bytes(), "image/jpeg")}
    added = writable.post("/api/items", files=files, data={"category": "Oatghurt"})
    assert added.status_code == 201, added.text
    item = added.json()["items"][0]
    assert item["status"] == "added" and item["category"] == "Oatghurt"
    index_path = Path(writable.get("/api/status").json()["index"]["path"])
    saved = list((index_path / "uploads" / "Oatghurt").iterdir())
    assert len(saved) == 1 and saved[0].name.startswith("Oatly-Natural-Oatghurt_016_")

    top = writable.post("/api/search?k=1", files=upload(photo)).json()["hits"][0]
    assert top["id"] == item["id"] and top["score"] == pytest.approx(1.0, abs=1e-4)
    again = writable.post("/api/items", files=files, data={"category": "Oatghurt"})
    assert again.status_code == 200 and again.json()["items"][0]["status"] == "unchanged"

    assert writable.get(f"/api/thumbnails/{item['id']}").status_code == 200
    assert writable.delete(f"/api/items/{item['id']}").json() == {"removed": [item["id"]]}
    assert not saved[0].exists() and not list((index_path / "thumbnails").glob(f"{item['id']}_*"))
    assert_error(writable.delete(f"/api/items/{item['id']}"), 404, "not_found")
    assert_error(writable.get(f"/api/items/{item['id']}"), 404, "not_found")
    assert writable.get("/api/health").json()["images"] == 60


def test_searches_go_on_while_photos_are_added(writable: TestClient, samples: Path) -> None:
    photos = sorted((samples / "queries").iterdir())[:3]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    with ThreadPoolExecutor(max_workers=3) as pool:
        adding = pool.submit(writable.post, "/api/items", files=files, data={"category": "New"})
        searches = [pool.submit(writable.post, "/api/search?k=2", files=upload(photos[0])) for _ in range(4)]
        assert [s.result().status_code for s in searches] == [200] * 4
        assert adding.result().status_code == 201
    assert writable.get("/api/items?category=New").json()["total"] == 3


def test_removing_a_catalogue_image_keeps_its_file(writable: TestClient, samples: Path) -> None:
    item = writable.get("/api/items?category=Pepper&limit=1").json()["items"][0]
    assert writable.delete(f"/api/items/{item['id']}").status_code == 200
    assert (samples / "catalog" / "Pepper" / item["name"]).is_file()
    assert writable.get("/api/categories").json()[5] == {"name": "Pepper", "count": 5}


def test_a_bad_photo_refuses_the_whole_batch(writable: TestClient, samples: Path) -> None:
    good = samples / "queries" / QUERY
    files = [("files", (good.name, good.read_bytes(), "image/jpeg")), ("files", ("bad.png", b"nope", "image/png"))]
    assert_error(writable.post("/api/items", files=files), 422, "invalid_image", "upload 'bad.png'")
    index_path = Path(writable.get("/api/status").json()["index"]["path"])
    assert not (index_path / "uploads").exists()
    assert writable.get("/api/health").json()["images"] == 60


def test_upload_names_and_categories_cannot_escape(writable: TestClient, samples: Path) -> None:
    photo = (samples / "queries" / QUERY).read_bytes()
    files = {"files": ("../../../outside.jpg", photo, "image/jpeg")}
    answer = writable.post("/api/items", files=files, data={"category": "../../etc"}).json()
    item = answer["items"][0]
    assert item["category"] == "../../etc" and item["name"].startswith("outside_")
    index_path = Path(writable.get("/api/status").json()["index"]["path"]).resolve()
    saved = [p.resolve() for p in (index_path / "uploads").rglob("*.jpg")]
    assert len(saved) == 1 and saved[0].is_relative_to(index_path / "uploads")
    bad = writable.post("/api/items", files=files, data={"category": "a\x00b"})
    assert_error(bad, 422, "invalid_request", "category must be printable")
    too_many = [("files", (f"{i}.jpg", photo, "image/jpeg")) for i in range(21)]
    assert_error(writable.post("/api/items", files=too_many), 413, "too_large", "at most 20 photos")


# -- settings, CLI, imports
def test_server_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="default_k must be in"):
        ServerSettings(default_k=0)
    with pytest.raises(SettingsError, match="thumbnail_size 100 must be one of"):
        ServerSettings(thumbnail_size=100)


def test_serve_command_fails_clearly_without_an_index(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--index", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no lookalike index here" in result.output


def test_importing_the_server_package_stays_light() -> None:
    code = (
        "import sys, lookalike.server, lookalike.server.serve; "
        "assert not {'fastapi', 'starlette', 'torch'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_search_options_as_form_fields_or_in_the_query_string(client: TestClient, samples: Path) -> None:
    files = upload(samples / "queries" / QUERY)
    as_field = client.post("/api/search", files=files, data={"k": "3", "category": "Juice", "rerank": "false"})
    assert as_field.status_code == 200, as_field.text
    answer = as_field.json()
    assert answer["k"] == 3 and len(answer["hits"]) == 3 and answer["searched_categories"] == ["Juice"]
    both = client.post("/api/search?k=3", files=files, data={"k": "3"})
    assert both.status_code == 200 and len(both.json()["hits"]) == 3
    assert_error(client.post("/api/search?k=5", files=files, data={"k": "3"}), 422, "invalid_request", "k sent twice")
    assert_error(client.post("/api/search", files=files, data={"k": "0"}), 422, "invalid_request", "form field 'k'")
    typo = client.post("/api/search", files=files, data={"topk": "3"})
    assert_error(typo, 422, "invalid_request", "'topk'", "expected file, k")


def test_openapi_documents_the_search_options_in_both_places(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/api/search"]["post"]
    in_query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert {"k", "category", "rerank", "gating"} <= in_query
    ref = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert {"file", "k", "category", "rerank", "gating"} <= set(spec["components"]["schemas"][ref]["properties"])


def test_searches_beyond_the_concurrency_wait_their_turn(engine: Engine, samples: Path) -> None:
    """With `search_concurrency=2`, four simultaneous uploads never run more than two searches at once."""
    import threading
    import time

    running, most = 0, 0
    guard = threading.Lock()
    original = engine.search

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.2)  # long enough for the other requests to arrive meanwhile
        try:
            return original(*args, **kwargs)
        finally:
            with guard:
                running -= 1

    engine.search = counted  # type: ignore[method-assign]
    photo = next((samples / "queries").glob("*.jpg")).read_bytes()
    settings = ServerSettings(warm_up=False, search_concurrency=2)
    with TestClient(create_app(engine, settings)) as test_client:
        statuses: list[int] = []

        def upload() -> None:
            answer = test_client.post("/api/search", files={"file": ("q.jpg", photo, "image/jpeg")})
            statuses.append(answer.status_code)

        threads = [threading.Thread(target=upload) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 4 and most == 2
    with pytest.raises(SettingsError, match="search_concurrency must be >= 1 or None, got 0"):
        ServerSettings(search_concurrency=0)
