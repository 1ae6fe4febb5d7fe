"""Settings: validated at start-up with a clear message; the development key is generated once."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import ConfigError, Settings, load_settings, parse_rate

STRONG = "s" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No developer's environment or `.env` leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name, raising=False)


class TestProductionRules:
    def test_requires_jwt_secret(self):
        with pytest.raises(ConfigError, match="JWT_SECRET is required when ENVIRONMENT=production"):
            load_settings(ENVIRONMENT="production")

    def test_requires_bcrypt_cost_12(self):
        with pytest.raises(ConfigError, match="BCRYPT_ROUNDS must be at least 12"):
            load_settings(ENVIRONMENT="production", JWT_SECRET=STRONG, BCRYPT_ROUNDS=11)

    def test_accepts_a_proper_configuration(self):
        settings = load_settings(ENVIRONMENT="PRODUCTION", JWT_SECRET=STRONG)
        assert settings.ENVIRONMENT == "production"
        assert settings.jwt_secret == STRONG
        assert settings.BCRYPT_ROUNDS == 12

    def test_reads_the_environment(self, monkeypatch):
        monkeypatch.setenv("ENVIRONMENT", "production")
        with pytest.raises(ConfigError, match="JWT_SECRET"):
            load_settings()


class TestValidation:
    def test_short_jwt_secret(self):
        with pytest.raises(ConfigError, match="JWT_SECRET must be at least 32 bytes"):
            load_settings(JWT_SECRET="x" * 31)

    @pytest.mark.parametrize(
        ("overrides", "name"),
        [
            ({"ACCESS_TOKEN_EXPIRE_MINUTES": 31}, "ACCESS_TOKEN_EXPIRE_MINUTES"),
            ({"BCRYPT_ROUNDS": 3}, "BCRYPT_ROUNDS"),
            ({"RATE_LIMIT_LOGIN": "ten per hour"}, "RATE_LIMIT_LOGIN"),
            ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
            ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ],
    )
    def test_message_names_the_setting(self, overrides, name):
        with pytest.raises(ConfigError, match=f"Invalid configuration: {name}"):
            load_settings(**overrides)

    def test_comma_lists(self, monkeypatch):
        monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example,")
        monkeypatch.setenv("TRUSTED_PROXIES", "")
        settings = load_settings()
        assert settings.CORS_ORIGINS == ["https://a.example", "https://b.example"]
        assert settings.TRUSTED_PROXIES == []

    def test_parse_rate(self):
        assert parse_rate("10/minute") == (10, 60)
        assert parse_rate(" 5 / day ") == (5, 86400)
        with pytest.raises(ConfigError):
            parse_rate("5 per day")


def test_loading_the_settings_loads_nothing_of_the_app():
    """config.py is the bottom layer: SYNC_STAGES is only split here (the sync runner checks it at start-up)."""
    code = (
        "import sys, backend.config;"
        "print(sorted(m for m in sys.modules if m.startswith('backend')), 'fastapi' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['backend', 'backend.config'] False"


class TestDefaults:
    def test_database_defaults_to_sqlite_in_data_dir(self, tmp_path):
        settings = load_settings(DATA_DIR=tmp_path / "d")
        assert settings.database_url == f"sqlite:///{(tmp_path / 'd' / 'taskdeck.db').as_posix()}"
        assert settings.ENVIRONMENT == "development"
        assert settings.CORS_ORIGINS == ["http://localhost:3000"]

    def test_better_auth_derived_urls(self):
        settings = load_settings(BETTER_AUTH_URL="https://web.example/")
        assert settings.better_auth_jwks_url == "https://web.example/api/auth/jwks"
        assert settings.better_auth_issuer == "https://web.example/"
        assert settings.better_auth_audience == "https://web.example/"
        override = load_settings(
            BETTER_AUTH_URL="https://web.example",
            BETTER_AUTH_JWKS_URL="https://keys.example/jwks",
            BETTER_AUTH_ISSUER="iss",
            BETTER_AUTH_AUDIENCE="aud",
        )
        assert (override.better_auth_jwks_url, override.better_auth_issuer, override.better_auth_audience) == (
            "https://keys.example/jwks",
            "iss",
            "aud",
        )
        assert load_settings().better_auth_jwks_url is None


class TestDevelopmentKey:
    def test_generated_once_and_reused(self, tmp_path):
        first = load_settings(DATA_DIR=tmp_path / "data").jwt_secret
        key_file = tmp_path / "data" / "jwt_secret"
        assert key_file.read_text() == first
        assert len(first.encode()) >= 32
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert load_settings(DATA_DIR=tmp_path / "data").jwt_secret == first
        assert load_settings(DATA_DIR=tmp_path / "elsewhere").jwt_secret != first

    def test_configured_key_wins(self, tmp_path):
        assert load_settings(DATA_DIR=tmp_path, JWT_SECRET=STRONG).jwt_secret == STRONG
        assert not (tmp_path / "jwt_secret").exists()


class TestEnvExample:
    ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"

    def test_lists_every_setting_with_a_comment(self):
        lines = self.ENV_EXAMPLE.read_text().splitlines()
        names = []
        for index, line in enumerate(lines):
            match = re.match(r"^#? ?([A-Z][A-Z0-9_]+)=", line)
            if match:
                names.append(match.group(1))
                assert lines[index - 1].startswith("#"), f"{match.group(1)} has no comment above it"
        assert sorted(names) == sorted(Settings.model_fields)

    def test_is_a_valid_configuration_as_is(self):
        settings = Settings(_env_file=self.ENV_EXAMPLE)
        assert settings.ENVIRONMENT == "development"
        assert settings.JWT_SECRET is None
        assert settings.TRUSTED_PROXIES == []

    def test_placeholders_only(self):
        text = self.ENV_EXAMPLE.read_text()
        assert "replace" in text
        for line in text.splitlines():
            if line.startswith(("# JWT_SECRET=", "# BETTER_AUTH_SECRET=", "# GITHUB_TOKEN=")):
                assert "replace" in line


class TestUrls:
    """DATABASE_URL's scheme and REDIS_URL are checked with the other settings, before anything connects."""

    @pytest.mark.parametrize(
        "url",
        [
            "",
            "sqlite:///data/x.db",
            "sqlite+aiosqlite:///x.db",
            "postgres://u:p@h/db",
            "postgresql://u:p%40ss@ep-x-pooler.neon.tech/db?sslmode=require",  # pragma: allowlist secret
            "postgresql+psycopg://u@h:5432/db",
        ],
    )
    def test_database_urls_accepted(self, url):
        settings = load_settings(DATABASE_URL=url)
        assert url == settings.DATABASE_URL

    @pytest.mark.parametrize("url", ["garbage", "mysql://u:p@h/db", "POSTGRESQL://h/db", "postgresql:/h/db"])
    def test_unsupported_database_url(self, url):
        with pytest.raises(ConfigError, match=r"DATABASE_URL: .*not a supported URL: use sqlite:///.*or postgresql://"):
            load_settings(DATABASE_URL=url)

    @pytest.mark.parametrize("url", ["postgresql://u:pa/ss@h/db", "postgresql://u:p@ss@h/db"])
    def test_unencoded_password_is_named_never_echoed(self, url):
        with pytest.raises(ConfigError, match=r"DATABASE_URL: .*percent-encode") as caught:
            load_settings(DATABASE_URL=url)
        assert "ss@" not in str(caught.value)
        assert "pa/" not in str(caught.value)

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("", None),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("rediss://u:p@h:6380", "rediss://u:p@h:6380"),
        ],
    )
    def test_redis_urls_accepted(self, url, expected):
        settings = load_settings(REDIS_URL=url)
        assert expected == settings.REDIS_URL

    @pytest.mark.parametrize(
        ("url", "says"),
        [
            ("notaurl", "not a supported URL"),
            ("http://h:6379", "not a supported URL"),
            ("redis://h:port/0", "port is not a number"),
            ("redis://h:6379/zero", "must be a number"),
        ],
    )
    def test_malformed_redis_url(self, url, says):
        with pytest.raises(ConfigError, match=f"REDIS_URL: .*{says}"):
            load_settings(REDIS_URL=url)


class TestDeploymentSettings:
    def test_defaults(self):
        settings = load_settings()
        assert settings.PORT == 8000
        assert settings.ALLOW_LOCAL_STATE is False
        assert settings.DB_STARTUP_RETRY_SECONDS == 10
        assert settings.HEALTH_CACHE_SECONDS == 1

    def test_port_from_the_environment(self, monkeypatch):
        monkeypatch.setenv("PORT", "10000")
        assert load_settings().PORT == 10000
        monkeypatch.setenv("PORT", "http")
        with pytest.raises(ConfigError, match="PORT"):
            load_settings()
