"""The media settings (docs/CONTRACT.md §10.1): defaults, values, and one line naming a bad one."""

from __future__ import annotations

import pytest

from connector_sidecar import ConfigError, Settings

BASE = {"EXTERNAL_CONNECTOR_TOKEN": "env-token-0123456789"}


def test_media_defaults() -> None:
    """25 MiB per item, prefetch on, private URLs off, the vendor's CDN."""
    settings = Settings.from_env(BASE)
    assert settings.media_max_bytes == 25 * 1024 * 1024
    assert settings.media_prefetch is True
    assert settings.media_fetch_allow_private is False
    assert settings.weixin_cdn_base_url == "https://novac2c.cdn.weixin.qq.com/c2c"
    assert settings.media_dir == settings.data_dir / "media"


def test_media_values() -> None:
    """Each setting is read; booleans take true/false/1/0/yes/no; the CDN URL loses its slash."""
    settings = Settings.from_env(
        {
            **BASE,
            "MEDIA_MAX_BYTES": "2048",
            "MEDIA_CACHE_BYTES": "0",
            "MEDIA_PREFETCH": "no",
            "MEDIA_FETCH_ALLOW_PRIVATE": "TRUE",
            "WEIXIN_CDN_BASE_URL": "http://127.0.0.1:9001/c2c/",
        }
    )
    assert (settings.media_max_bytes, settings.media_cache_bytes) == (2048, 0)
    assert (settings.media_prefetch, settings.media_fetch_allow_private) == (False, True)
    assert settings.weixin_cdn_base_url == "http://127.0.0.1:9001/c2c"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEDIA_MAX_BYTES", "lots"),
        ("MEDIA_MAX_BYTES", "10"),
        ("MEDIA_CACHE_BYTES", "-1"),
        ("MEDIA_PREFETCH", "maybe"),
        ("MEDIA_FETCH_ALLOW_PRIVATE", "2"),
        ("WEIXIN_CDN_BASE_URL", "cdn.example"),
    ],
)
def test_bad_media_settings_name_the_variable(name: str, value: str) -> None:
    """A malformed media setting stops the start with its name."""
    with pytest.raises(ConfigError) as error:
        Settings.from_env({**BASE, name: value})
    assert error.value.name == name
