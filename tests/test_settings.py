from __future__ import annotations

from pathlib import Path

import pytest

from lookalike import Settings
from lookalike.errors import SettingsError


def test_json_round_trip(tmp_path: Path) -> None:
    settings = Settings().replace(
        **{"embed.model": "efficientnet-lite2", "rerank.chain": ["mask_iou"], "localize.enabled": True}
    )
    settings.to_json(tmp_path / "s.json")
    loaded = Settings.from_json(tmp_path / "s.json")
    assert loaded == settings and loaded.rerank.chain == ("mask_iou",)


def test_unknown_keys_and_bad_values_are_named() -> None:
    with pytest.raises(SettingsError, match=r"unknown key\(s\) \['colour'\] in settings.embed"):
        Settings.from_dict({"embed": {"colour": True}})
    with pytest.raises(SettingsError, match="settings.embed.input_size must be of type int"):
        Settings.from_dict({"embed": {"input_size": "big"}})
    with pytest.raises(SettingsError, match="embed.gem_p must be >= 1"):
        Settings().replace(**{"embed.gem_p": 0.5})
    with pytest.raises(SettingsError, match="unknown setting 'embed.size'; expected one of: embed.model"):
        Settings().replace(**{"embed.size": 3})


def test_integers_are_accepted_for_floats_and_settings_are_frozen() -> None:
    settings = Settings.from_dict({"embed": {"gem_p": 4}})
    assert settings.embed.gem_p == 4.0 and isinstance(settings.embed.gem_p, float)
    with pytest.raises(AttributeError):
        settings.embed.gem_p = 2.0  # type: ignore[misc]


def test_corrupt_settings_file(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(SettingsError, match=r"s\.json: not valid JSON"):
        Settings.from_json(tmp_path / "s.json")
