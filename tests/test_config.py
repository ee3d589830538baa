"""Settings parsing: every variable of the README's table, and a clear error for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import (ConfigError, check_listen_address, is_loopback_host, load_settings, parse_database_url,
                             read_environment)


def test_defaults_with_an_empty_environment():
    settings = load_settings({})
    assert settings.database_path == Path("./data/providers.db")
    assert settings.backup_file == Path("./data/config_backup.json")
    assert settings.secret_file == Path("./data/secret.key")
    assert settings.api_key_secrets == ()
    assert settings.request_timeout_seconds == 10
    assert settings.admin_token is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.probe_concurrency == 20
    assert settings.probe_interval_seconds == 0


@pytest.mark.parametrize("url, path", [
    ("sqlite:///./data/x.db", "./data/x.db"),
    ("sqlite:///relative/x.db", "relative/x.db"),
    ("sqlite:////abs/path/x.db", "/abs/path/x.db"),
    ("/bare/absolute.db", "/bare/absolute.db"),
    ("bare/relative.db", "bare/relative.db"),
])
def test_database_url_forms(url, path):
    assert parse_database_url(url) == Path(path)


@pytest.mark.parametrize("url", ["postgres://db/x", "sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://x.db",
                                 "sqlite:///dir/"])
def test_malformed_database_url_is_refused(url):
    with pytest.raises(ConfigError, match="BACKEND_DATABASE_URL"):
        parse_database_url(url)


@pytest.mark.parametrize("name, value", [
    ("BACKEND_PORT", "eighty"), ("BACKEND_PORT", "0"), ("BACKEND_PORT", "70000"),
    ("BACKEND_REQUEST_TIMEOUT_SECONDS", "soon"), ("BACKEND_REQUEST_TIMEOUT_SECONDS", "0"),
    ("BACKEND_REQUEST_TIMEOUT_SECONDS", "nan"), ("BACKEND_REQUEST_TIMEOUT_SECONDS", "inf"),
    ("BACKEND_TEST_CONCURRENCY", "0"), ("BACKEND_TEST_CONCURRENCY", "2.5"),
    ("BACKEND_CHECK_INTERVAL_SECONDS", "-1"),
])
def test_bad_numbers_are_refused_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_secrets_are_comma_separated_first_is_current():
    assert load_settings({"BACKEND_API_KEY_SECRET": "new, old ,"}).api_key_secrets == ("new", "old")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_non_loopback_host_without_authentication_is_refused(host):
    with pytest.raises(ConfigError, match="BACKEND_ADMIN_TOKEN"):
        check_listen_address(load_settings({"BACKEND_HOST": host}), tokens_exist=False)
    check_listen_address(load_settings({"BACKEND_HOST": host, "BACKEND_ADMIN_TOKEN": "t" * 16}), tokens_exist=False)
    check_listen_address(load_settings({"BACKEND_HOST": host}), tokens_exist=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host):
    assert is_loopback_host(host)


def test_command_line_wins_over_environment():
    settings = load_settings({"BACKEND_HOST": "127.0.0.2", "BACKEND_PORT": "9000"}, host="127.0.0.3", port=9001)
    assert (settings.host, settings.port) == ("127.0.0.3", 9001)


def test_dotenv_file_is_read_and_real_environment_wins(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("BACKEND_PORT=9100\nBACKEND_TEST_CONCURRENCY=7\n")
    monkeypatch.setenv("BACKEND_PORT", "9200")
    monkeypatch.delenv("BACKEND_TEST_CONCURRENCY", raising=False)
    settings = load_settings(read_environment(env_file))
    assert settings.port == 9200
    assert settings.probe_concurrency == 7


@pytest.mark.parametrize("token", ["t", "fifteen-chars-x", "has a space in it 0123", "tab\tinside-the-token-0123"])
def test_short_or_whitespace_admin_token_is_refused(token):
    with pytest.raises(ConfigError, match="BACKEND_ADMIN_TOKEN must be at least 16 characters"):
        load_settings({"BACKEND_ADMIN_TOKEN": token})


def test_allowed_origins_and_hosts_are_parsed_lower_case():
    settings = load_settings({"BACKEND_ALLOWED_ORIGINS": "http://localhost:3000, https://App.Example.com",
                              "BACKEND_ALLOWED_HOSTS": "Registry.Example.com,registry.internal."})
    assert settings.allowed_origins == {"http://localhost:3000", "https://app.example.com"}
    assert settings.allowed_hosts == {"registry.example.com", "registry.internal"}
    assert load_settings({}).allowed_hosts is None
    assert load_settings({}).allowed_origins == frozenset()


@pytest.mark.parametrize("name, value", [
    ("BACKEND_ALLOWED_ORIGINS", "app.example.com"), ("BACKEND_ALLOWED_ORIGINS", "https://app.example.com/path"),
    ("BACKEND_ALLOWED_ORIGINS", "ftp://app.example.com"), ("BACKEND_ALLOWED_HOSTS", "registry.example.com:8000"),
    ("BACKEND_ALLOWED_HOSTS", "bad host"), ("BACKEND_IDLE_TIMEOUT_SECONDS", "0"),
])
def test_bad_origin_host_and_timeout_settings_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})
