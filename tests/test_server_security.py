"""Who may change the catalogue through the server: writes off by default, the API key, the origin
check against cross-site requests, CORS only when configured, trusted hosts, and the start-up checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'lookalike[server]'")

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lookalike import Engine
from lookalike.cli import app as cli_app
from lookalike.errors import SettingsError
from lookalike.server import ServerSettings, create_app
from lookalike.server.serve import settings_for_host, startup_notes

from .conftest import assert_error, copy_index

KEY = "correct-horse-battery-staple"
PHOTO = "Oatly-Natural-Oatghurt_016.jpg"


@contextmanager
def serving(engine: Engine, base_url: str = "http://testserver", **settings: Any) -> Iterator[TestClient]:
    app = create_app(engine, ServerSettings(warm_up=False, **settings))
    with TestClient(app, base_url=base_url) as client:
        yield client


def photo_files(samples: Path, name: str = PHOTO) -> dict[str, tuple[str, bytes, str]]:
    photo = samples / "queries" / name
    return {"files": (photo.name, photo.read_bytes(), "image/jpeg")}


# -- writes off unless enabled
def test_writes_are_refused_by_default(engine: Engine, samples: Path) -> None:
    with serving(engine) as client:
        added = client.post("/api/items", files=photo_files(samples))
        assert_error(added, 403, "writes_disabled", "--allow-writes", "ServerSettings(allow_writes=True)")
        assert_error(client.delete("/api/items/1"), 403, "writes_disabled")
        assert client.get("/api/health").json()["images"] == 60
        assert client.get("/api/items/1").status_code == 200  # reads stay open
        writes = client.get("/api/status").json()["server"]["writes"]
        assert writes == {"enabled": False, "key_required": False, "cors_origins": []}


def test_writes_refused_before_the_upload_is_read(engine: Engine) -> None:
    """A refused write is answered from its headers: a body the server never reads is not an error."""

    def endless() -> Iterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=files; filename=a.jpg\r\n\r\n"
        raise AssertionError("the server read the body of a refused write")

    with serving(engine) as client:
        headers = {"content-type": "multipart/form-data; boundary=b"}
        assert_error(client.post("/api/items", content=endless(), headers=headers), 403, "writes_disabled")


# -- the API key
def test_writes_need_the_api_key(engine: Engine, samples: Path) -> None:
    with serving(engine, allow_writes=True, api_key=KEY) as client:
        writes = client.get("/api/status").json()["server"]["writes"]
        assert writes["enabled"] is True and writes["key_required"] is True

        missing = client.post("/api/items", files=photo_files(samples))
        assert_error(missing, 401, "unauthorized", "Authorization: Bearer <key>")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        not_bearer = client.delete("/api/items/1", headers={"Authorization": f"Basic {KEY}"})
        assert_error(not_bearer, 401, "unauthorized")

        for headers in ({"Authorization": "Bearer wrong-key-123"}, {"X-API-Key": KEY[:-1]}, {"X-API-Key": KEY + "x"}):
            wrong = client.post("/api/items", files=photo_files(samples), headers=headers)
            assert_error(wrong, 403, "forbidden", "not this server's")
            assert KEY not in wrong.text
        latin1 = client.delete("/api/items/1", headers={"Authorization": b"Bearer caf\xe9-caf\xe9-caf\xe9"})
        assert_error(latin1, 403, "forbidden")  # not a 500 from comparing non-ASCII text
        assert client.get("/api/health").json()["images"] == 60

        added = client.post("/api/items", files=photo_files(samples), headers={"Authorization": f"Bearer {KEY}"})
        assert added.status_code == 201, added.text
        item_id = added.json()["items"][0]["id"]
        removed = client.delete(f"/api/items/{item_id}", headers={"X-API-Key": KEY})
        assert removed.json() == {"removed": [item_id]}
        lower = client.delete("/api/items/1", headers={"authorization": f"bearer {KEY}"})
        assert lower.status_code == 200
        assert KEY not in client.get("/api/status").text


def test_the_key_is_never_shown() -> None:
    settings = ServerSettings(allow_writes=True, api_key=KEY)
    assert KEY not in repr(settings)
    assert all(KEY not in note for _, note in startup_notes("127.0.0.1", settings))
    assert ServerSettings(api_key="").api_key is None  # an empty LOOKALIKE_API_KEY means no key
    with pytest.raises(SettingsError, match="api_key must be at least 8 visible ASCII characters"):
        ServerSettings(api_key="short")
    with pytest.raises(SettingsError, match="without spaces"):
        ServerSettings(api_key="has a space in it")


# -- cross-site requests
def test_cross_origin_writes_are_refused(engine: Engine, samples: Path) -> None:
    with serving(engine, base_url="http://127.0.0.1:8000", allow_writes=True) as client:
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://127.0.0.1:8001"},  # another port is another origin
            {"Origin": "https://127.0.0.1:8000"},  # and another scheme
            {"Sec-Fetch-Site": "cross-site"},
        ):
            refused = client.post("/api/items", files=photo_files(samples), headers=headers)
            assert_error(refused, 403, "cross_origin", "--cors-origin")
            assert_error(client.delete("/api/items/1", headers=headers), 403, "cross_origin")
        assert client.get("/api/health").json()["images"] == 60

        # the server's own page: same scheme, host and port
        same = {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}
        added = client.post("/api/items", files=photo_files(samples), headers=same)
        assert added.status_code == 201, added.text
        assert client.delete("/api/items/1", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 200
        # reads are not writes: a foreign page may still search (it cannot read the answer without CORS)
        assert client.get("/api/items/2", headers={"Origin": "https://evil.example"}).status_code == 200


def test_default_ports_are_the_same_origin(engine: Engine) -> None:
    with serving(engine, base_url="https://shop.example.com", allow_writes=True) as client:
        assert client.delete("/api/items/1", headers={"Origin": "https://shop.example.com:443"}).status_code == 200
        assert client.delete("/api/items/2", headers={"Origin": "https://SHOP.example.com"}).status_code == 200
        assert_error(client.delete("/api/items/3", headers={"Origin": "http://shop.example.com"}), 403, "cross_origin")


# -- CORS
def test_cors_headers_only_for_the_configured_origins(engine: Engine, samples: Path) -> None:
    shop = "https://shop.example.com"
    with serving(engine) as client:  # none configured: no CORS headers at all
        answer = client.get("/api/status", headers={"Origin": shop})
        assert answer.status_code == 200
        assert not [name for name in answer.headers if name.lower().startswith("access-control-")]
        preflight = client.options("/api/items", headers={"Origin": shop, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
    with serving(engine, allow_writes=True, api_key=KEY, cors_origins=(shop + "/",)) as client:
        assert client.get("/api/status").json()["server"]["writes"]["cors_origins"] == [shop]
        answer = client.get("/api/status", headers={"Origin": shop})
        assert answer.headers["access-control-allow-origin"] == shop
        other = client.get("/api/status", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = client.options(
            "/api/items",
            headers={"Origin": shop, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"},
        )  # fmt: skip
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == shop
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        # the configured site's page may write, with the key; refusals carry the CORS header so it can read them
        cross = {"Origin": shop, "Sec-Fetch-Site": "cross-site"}
        refused = client.post("/api/items", files=photo_files(samples), headers=cross)
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == shop
        added = client.post("/api/items", files=photo_files(samples), headers={**cross, "X-API-Key": KEY})
        assert added.status_code == 201, added.text


def test_cors_origins_are_checked() -> None:
    for bad in ("*", "shop.example.com", "https://shop.example.com/path", "ftp://x.example"):
        with pytest.raises(SettingsError, match="must be a scheme and host"):
            ServerSettings(cors_origins=(bad,))


# -- trusted hosts (DNS rebinding)
def test_untrusted_hosts_are_refused(engine: Engine) -> None:
    loopback = ("localhost", "127.0.0.1", "::1")
    for url in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        with serving(engine, base_url=url, trusted_hosts=loopback) as client:
            assert client.get("/api/health").status_code == 200, url
    with serving(engine, base_url="http://attacker.example:8000", trusted_hosts=loopback) as client:
        refused = client.get("/api/status")
        assert_error(refused, 400, "untrusted_host", "attacker.example", "--trusted-host")
        assert_error(client.get("/"), 400, "untrusted_host")
    with serving(engine, base_url="http://images.example.com", trusted_hosts=("*.example.com",)) as client:
        assert client.get("/api/health").status_code == 200
    with serving(engine, base_url="http://example.com.evil", trusted_hosts=("*.example.com",)) as client:
        assert_error(client.get("/api/health"), 400, "untrusted_host")
    with serving(engine, base_url="http://anything.example") as client:  # not configured: any host
        assert client.get("/api/health").status_code == 200
    with pytest.raises(SettingsError, match="trusted host 'http://x' must be a host name"):
        ServerSettings(trusted_hosts=("http://x",))


# -- start-up checks
def test_writes_off_loopback_need_a_key() -> None:
    with pytest.raises(SettingsError, match="refusing to allow writes on 0.0.0.0 without an API key.*--api-key"):
        settings_for_host("0.0.0.0", ServerSettings(allow_writes=True))
    public = settings_for_host("0.0.0.0", ServerSettings(allow_writes=True, api_key=KEY))
    assert public.trusted_hosts is None  # the names clients use are unknown: --trusted-host sets them
    assert settings_for_host("192.168.1.20", ServerSettings()).allow_writes is False
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        local = settings_for_host(host, ServerSettings(allow_writes=True))
        assert local.trusted_hosts == ("localhost", "127.0.0.1", "::1"), host
    chosen = settings_for_host("127.0.0.1", ServerSettings(trusted_hosts=("lookalike.test",)))
    assert chosen.trusted_hosts == ("lookalike.test",)
    notes = " ".join(note for _, note in startup_notes("127.0.0.1", ServerSettings(allow_writes=True)))
    assert "without an API key" in notes and "a key is optional" in notes


def test_serve_command_refuses_public_writes_without_a_key(built_index: Path) -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--index", str(built_index), "--host", "0.0.0.0", "--allow-writes"])
    assert result.exit_code == 2, result.output
    assert "refusing to allow writes on 0.0.0.0 without an API key" in " ".join(result.output.split())


def test_serve_command_passes_the_options(built_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    served: dict[str, Any] = {}

    def fake_run(app: Any, **options: Any) -> None:
        served.update(options, settings=app.state.context.settings)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setenv("LOOKALIKE_API_KEY", KEY)
    index = copy_index(built_index, tmp_path)
    arguments = ["serve", "--index", str(index), "--host", "0.0.0.0", "--port", "8123", "--allow-writes",
                 "--cors-origin", "https://a.example", "--cors-origin", "https://b.example",
                 "--trusted-host", "images.example.com"]  # fmt: skip
    result = CliRunner().invoke(cli_app, arguments)
    assert result.exit_code == 0, result.output
    settings = served["settings"]
    assert served["host"] == "0.0.0.0" and served["port"] == 8123
    assert settings.allow_writes and settings.api_key == KEY
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.trusted_hosts == ("images.example.com",)
    assert "writes are on and need the API key" in result.output and KEY not in result.output
