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
    with pytest.raises(SettingsError, match="rerank.archive.query_k must be >= 1"):  # shares diffusion's checks
        Settings().replace(**{"rerank.archive.query_k": 0})
    with pytest.raises(SettingsError, match="rerank.diffusion.gamma must be >= 0"):
        Settings().replace(**{"rerank.diffusion.gamma": -1.0})


def test_integers_are_accepted_for_floats_and_settings_are_frozen() -> None:
    settings = Settings.from_dict({"embed": {"gem_p": 4}})
    assert settings.embed.gem_p == 4.0 and isinstance(settings.embed.gem_p, float)
    with pytest.raises(AttributeError):
        settings.embed.gem_p = 2.0  # type: ignore[misc]


def test_corrupt_settings_file(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(SettingsError, match=r"s\.json: not valid JSON"):
        Settings.from_json(tmp_path / "s.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SettingsError, match="settings must be a JSON object, got list"):
        Settings.from_json(tmp_path / "list.json")


def test_each_reranker_has_its_own_section_and_old_flat_names_still_read(tmp_path: Path) -> None:
    settings = Settings().replace(**{"rerank.sift.weight": 0.5, "rerank.qe.neighbours": 3})
    assert settings.rerank.sift.weight == 0.5 and settings.rerank.qe.neighbours == 3
    assert settings.get("rerank.sift.weight") == 0.5
    assert settings.to_dict()["rerank"]["diffusion"]["alpha"] == 0.99
    # an index written before the sections existed, and the old dotted names
    old = Settings().to_dict()
    old["rerank"] = {"chain": ["sift"], "sift_weight": 0.7, "mask_iou_top_n": 10, "diffusion_alpha": 0.5}
    (tmp_path / "old.json").write_text(__import__("json").dumps(old))
    loaded = Settings.from_json(tmp_path / "old.json")
    assert (loaded.rerank.sift.weight, loaded.rerank.mask_iou.top_n, loaded.rerank.diffusion.alpha) == (0.7, 10, 0.5)
    assert Settings().replace(**{"rerank.mask_iou_weight": 0.3}).rerank.mask_iou.weight == 0.3
    with pytest.raises(SettingsError, match=r"rerank.sift.ratio must be in \(0, 1\), got 2"):
        Settings().replace(**{"rerank.sift.ratio": 2.0})
    with pytest.raises(
        SettingsError, match="unknown setting 'rerank.sift.colour'; expected one of: .*rerank.sift.top_n"
    ):
        Settings().replace(**{"rerank.sift.colour": 1})
    with pytest.raises(SettingsError, match="unknown setting 'rerank.sift'"):
        Settings().replace(**{"rerank.sift": 1})
