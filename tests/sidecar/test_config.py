"""Settings from the environment (docs/CONTRACT.md §9) and the CLI's refusal to start without them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import standardwebhooks

from connector_sidecar import ConfigError, Secret, Settings
from connector_sidecar.signing import Signer

TOKEN = "env-token-0123456789"
BASE = {"EXTERNAL_CONNECTOR_TOKEN": TOKEN}
SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_dGVzdC1zZWNyZXQtMg=="


def test_defaults() -> None:
    """With only the token set, every other setting has the docs/CONTRACT.md §9 default."""
    settings = Settings.from_env(BASE)
    assert settings.token == Secret(TOKEN)
    assert (settings.host, settings.port) == ("127.0.0.1", 8787)
    assert settings.data_dir == Path("./var")
    assert settings.connectors == ("weixin", "feishu", "sim")
    assert settings.bridge_url is None
    assert settings.bridge_token is None
    assert settings.bridge_signing_secrets == ()
    assert settings.bridge_concurrency == 16
    assert settings.bridge_timeout_seconds == 15.0
    assert settings.bridge_max_age_seconds == 86400.0
    assert settings.weixin_base_url == "https://ilinkai.weixin.qq.com"
    assert settings.feishu_base_url == "https://open.feishu.cn"
    assert settings.lark_base_url == "https://open.larksuite.com"
    assert (settings.log_level, settings.log_format) == ("info", "console")


def test_every_variable_is_parsed() -> None:
    """Every docs/CONTRACT.md §9 variable reaches its setting."""
    env = {
        **BASE,
        "SIDECAR_HOST": "0.0.0.0",
        "SIDECAR_PORT": "9000",
        "SIDECAR_DATA_DIR": "/srv/sidecar",
        "SIDECAR_CONNECTORS": " Sim , weixin,sim ",
        "BRIDGE_URL": "http://host:8000/api/channel-connector-bridge/events",
        "BRIDGE_TOKEN": "bridge-token-0123456789",
        "BRIDGE_SIGNING_SECRET": f"{SECRET_A}, {SECRET_B}",
        "BRIDGE_CONCURRENCY": "4",
        "BRIDGE_TIMEOUT_SECONDS": "2.5",
        "BRIDGE_MAX_AGE_SECONDS": "3600",
        "WEIXIN_BASE_URL": "http://127.0.0.1:9001/",
        "FEISHU_BASE_URL": "http://127.0.0.1:9002",
        "LARK_BASE_URL": "https://lark.example",
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
    }
    settings = Settings.from_env(env)
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert settings.data_dir == Path("/srv/sidecar")
    assert settings.connectors == ("sim", "weixin")
    assert settings.bridge_url == "http://host:8000/api/channel-connector-bridge/events"
    assert settings.bridge_token == Secret("bridge-token-0123456789")
    assert settings.bridge_signing_secrets == (Secret(SECRET_A), Secret(SECRET_B))
    assert settings.bridge_concurrency == 4
    assert settings.bridge_timeout_seconds == 2.5
    assert settings.bridge_max_age_seconds == 3600.0
    assert settings.weixin_base_url == "http://127.0.0.1:9001"
    assert settings.feishu_base_url == "http://127.0.0.1:9002"
    assert settings.lark_base_url == "https://lark.example"
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    assert settings.database_path == Path("/srv/sidecar/sidecar.sqlite3")


def test_a_sixteen_character_token_is_enough() -> None:
    """A token of 16 characters that is no placeholder is accepted, for both tokens."""
    token = "k3Jq9-Zr_pW2xY7v"
    settings = Settings.from_env({"EXTERNAL_CONNECTOR_TOKEN": token, "BRIDGE_TOKEN": token})
    assert settings.token == settings.bridge_token == Secret(token)


def test_an_unpadded_signing_secret_is_accepted() -> None:
    """``whsec_`` + base64 without its ``=`` padding is accepted, and what it signs verifies
    with the official Standard Webhooks library given the same unpadded secret."""
    unpadded = "whsec_dGVzdC1zZWNyZXQtMg"
    settings = Settings.from_env({**BASE, "BRIDGE_SIGNING_SECRET": unpadded})
    assert settings.bridge_signing_secrets == (Secret(unpadded),)
    headers = Signer(settings.bridge_signing_secrets).headers("evt_1", int(time.time()), b"{}")
    assert standardwebhooks.Webhook(unpadded).verify(b"{}", headers) == {}


def test_blank_values_mean_unset() -> None:
    """A variable set to an empty or blank string falls back to its default."""
    settings = Settings.from_env({**BASE, "SIDECAR_PORT": "", "BRIDGE_URL": "  ", "LOG_LEVEL": ""})
    assert settings.port == 8787
    assert settings.bridge_url is None
    assert settings.log_level == "info"


BAD = [
    ("EXTERNAL_CONNECTOR_TOKEN", None),
    ("EXTERNAL_CONNECTOR_TOKEN", "   "),
    ("EXTERNAL_CONNECTOR_TOKEN", "short"),
    ("EXTERNAL_CONNECTOR_TOKEN", "fifteen-chars-x"),
    ("EXTERNAL_CONNECTOR_TOKEN", "change-me-sidecar-api-token"),
    ("EXTERNAL_CONNECTOR_TOKEN", "CHANGE_ME_please_0123456789"),
    ("EXTERNAL_CONNECTOR_TOKEN", "changeme"),
    ("EXTERNAL_CONNECTOR_TOKEN", "secret"),
    ("EXTERNAL_CONNECTOR_TOKEN", "Token"),
    ("EXTERNAL_CONNECTOR_TOKEN", "x" * 40),
    ("BRIDGE_TOKEN", "change-me-bridge-token"),
    ("BRIDGE_TOKEN", "short"),
    ("SIDECAR_HOST", "example.com"),
    ("SIDECAR_PORT", "eighty"),
    ("SIDECAR_PORT", "0"),
    ("SIDECAR_PORT", "65536"),
    ("SIDECAR_CONNECTORS", "sim,telegram"),
    ("SIDECAR_CONNECTORS", ","),
    ("BRIDGE_URL", "ftp://host/events"),
    ("BRIDGE_URL", "host:8000/events"),
    ("BRIDGE_SIGNING_SECRET", "not-a-whsec"),
    ("BRIDGE_SIGNING_SECRET", "whsec_"),
    ("BRIDGE_SIGNING_SECRET", f"{SECRET_A},whsec_!!notbase64"),
    ("BRIDGE_CONCURRENCY", "0"),
    ("BRIDGE_CONCURRENCY", "1.5"),
    ("BRIDGE_TIMEOUT_SECONDS", "soon"),
    ("BRIDGE_TIMEOUT_SECONDS", "0"),
    ("BRIDGE_TIMEOUT_SECONDS", "nan"),
    ("BRIDGE_MAX_AGE_SECONDS", "-1"),
    ("BRIDGE_MAX_AGE_SECONDS", "inf"),
    ("WEIXIN_BASE_URL", "weixin"),
    ("FEISHU_BASE_URL", "file:///etc/passwd"),
    ("LARK_BASE_URL", "http://"),
    ("LOG_LEVEL", "loud"),
    ("LOG_FORMAT", "xml"),
    ("SIDECAR_DATABASE_URL", "mysql://db/sidecar"),
    ("SIDECAR_DATABASE_URL", "sidecar.sqlite3"),
    ("SIDECAR_LEASE_SECONDS", "1"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_bad_or_missing_setting_raises_config_error_naming_it(name: str, value: str | None) -> None:
    """A missing or malformed variable raises ConfigError whose message starts with its name."""
    env = dict(BASE)
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.name == name
    assert str(caught.value).startswith(f"{name}: ")
    assert "\n" not in str(caught.value)


def test_secrets_never_appear_in_the_repr() -> None:
    """``repr(settings)`` masks the API token, the bridge token and the signing secrets."""
    settings = Settings.from_env(
        {**BASE, "BRIDGE_TOKEN": "bridge-token-xyz", "BRIDGE_SIGNING_SECRET": SECRET_A}
    )
    text = repr(settings) + str(settings)
    for secret in (TOKEN, "bridge-token-xyz", SECRET_A, SECRET_A.removeprefix("whsec_")):
        assert secret not in text
    assert "Secret('**********')" in text
    assert settings.token.reveal() == TOKEN


def test_the_database_url_and_its_password_stay_out_of_reprs_and_logs() -> None:
    """SIDECAR_DATABASE_URL selects PostgreSQL; its password is in no repr and not in the
    store's description (what the start-up log line prints)."""
    from connector_sidecar.store import database_for

    url = "postgresql://sidecar:pg-pass-1234@db.internal:5432/sidecar"
    settings = Settings.from_env(
        {
            **BASE,
            "SIDECAR_DATABASE_URL": url,
            "SIDECAR_REPLICA_ID": "r1",
            "SIDECAR_LEASE_SECONDS": "7",
        }
    )
    assert "pg-pass-1234" not in repr(settings)
    assert settings.replica_id == "r1"
    assert settings.lease_seconds == 7.0
    assert settings.database_url is not None
    db = database_for(settings.database_url.reveal(), settings.database_path)
    assert db.dialect == "postgres"
    assert not db.exclusive
    assert "pg-pass-1234" not in db.describe() + repr(db)
    assert "db.internal:5432/sidecar" in db.describe()
    sqlite = database_for(None, settings.database_path)
    assert (sqlite.dialect, sqlite.exclusive) == ("sqlite", True)


def test_secret_wrapper() -> None:
    """Secret hides its value from str/repr/f-strings and compares by value."""
    secret = Secret("hunter2-hunter2")
    assert "hunter2" not in f"{secret} {secret!r} {[secret]}"
    assert secret == Secret("hunter2-hunter2")
    assert secret != Secret("other")
    assert secret != "hunter2-hunter2"
    assert not Secret("")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from connector_sidecar.cli import main; main()", *args]
    return subprocess.run(
        command,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, "EXTERNAL_CONNECTOR_TOKEN"),
        ({**BASE, "SIDECAR_PORT": "not-a-port"}, "SIDECAR_PORT"),
        ({**BASE, "BRIDGE_SIGNING_SECRET": "nope"}, "BRIDGE_SIGNING_SECRET"),
    ],
)
def test_serve_with_a_bad_setting_exits_2_with_one_line(
    env: dict[str, str], name: str, tmp_path: Path
) -> None:
    """``connector-sidecar serve`` with a bad environment exits 2, printing one line naming the variable."""
    result = _cli({**env, "SIDECAR_DATA_DIR": str(tmp_path)}, "serve")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "sidecar.sqlite3").exists()


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize("token", ["change-me-sidecar-api-token", "too-short-token"])
def test_placeholder_or_short_token_is_refused_with_one_line(
    command: str, token: str, tmp_path: Path
) -> None:
    """``serve`` and ``check-config`` refuse a placeholder or short token: one line, exit 2."""
    result = _cli({"EXTERNAL_CONNECTOR_TOKEN": token, "SIDECAR_DATA_DIR": str(tmp_path)}, command)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("connector-sidecar: configuration error: EXTERNAL_CONNECTOR_TOKEN: ")
    assert token not in line
    assert result.stdout == ""
    assert not (tmp_path / "sidecar.sqlite3").exists()


def test_check_config(tmp_path: Path) -> None:
    """``check-config`` exits 0 on a good environment and 2 on a bad one."""
    good = _cli({**BASE, "SIDECAR_DATA_DIR": str(tmp_path)}, "check-config")
    assert (good.returncode, good.stdout.strip()) == (0, "configuration ok")
    bad = _cli({**BASE, "LOG_FORMAT": "xml"}, "check-config")
    assert bad.returncode == 2
    assert "LOG_FORMAT" in bad.stderr
