"""Settings: precedence, key masking, the 5 s poll floor, the key file."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import warnings
from pathlib import Path

import pytest

from goenhance_nb._errors import AuthError, ConfigError
from goenhance_nb._settings import (
    DEFAULT_REAL_BASE_URL,
    SecretKey,
    Settings,
    SettingsWarning,
    write_key_file,
)

SENTINEL = "sk-SENTINEL-7f3a9c"


@pytest.fixture
def no_key_file(tmp_path: Path) -> Path:
    return tmp_path / "nokeyfile"


def test_defaults(no_key_file: Path) -> None:
    s = Settings.resolve(env={}, key_file=no_key_file)
    assert s.api_key is None and s.base_url is None
    assert s.poll_interval == 5.0 and s.job_timeout == 1800.0 and s.max_retries == 4
    assert s.is_embedded_simulator and s.host is None
    assert s.cache_dir.name == "goenhance_nb"


def test_precedence_explicit_over_config_over_env(no_key_file: Path) -> None:
    env = {
        "GOENHANCE_POLL_INTERVAL": "1.5",
        "GOENHANCE_CACHE_DIR": "/env/cache",
        "GOENHANCE_BUDGET": "100",
        "GOENHANCE_WAIT": "1",
        "GOENHANCE_BASE_URL": "http://127.0.0.1:9000/",
    }
    s = Settings.resolve(env=env, key_file=no_key_file)
    assert (s.poll_interval, s.cache_dir, s.budget, s.wait) == (1.5, Path("/env/cache"), 100, True)
    assert s.base_url == "http://127.0.0.1:9000"

    s = Settings.resolve(
        config={"poll_interval": 2.0, "budget": 50, "cache_dir": None},
        env=env,
        key_file=no_key_file,
    )
    assert (s.poll_interval, s.budget, s.cache_dir) == (2.0, 50, Path("/env/cache"))

    s = Settings.resolve(
        explicit={"poll_interval": 0.5, "wait": False},
        config={"poll_interval": 2.0},
        env=env,
        key_file=no_key_file,
    )
    assert s.poll_interval == 0.5 and s.wait is False


def test_env_values_are_validated(no_key_file: Path) -> None:
    with pytest.raises(ConfigError, match="GOENHANCE_POLL_INTERVAL"):
        Settings.resolve(env={"GOENHANCE_POLL_INTERVAL": "soon"}, key_file=no_key_file)
    with pytest.raises(ConfigError, match="GOENHANCE_BUDGET"):
        Settings.resolve(env={"GOENHANCE_BUDGET": "1.5"}, key_file=no_key_file)
    with pytest.raises(ConfigError, match="base_url"):
        Settings.resolve(env={"GOENHANCE_BASE_URL": "ftp://x"}, key_file=no_key_file)
    with pytest.raises(ConfigError, match="unknown"):
        Settings.resolve(config={"colour": "red"}, env={}, key_file=no_key_file)


def test_key_from_env_means_real_api(no_key_file: Path) -> None:
    s = Settings.resolve(env={"GOENHANCE_API_KEY": SENTINEL}, key_file=no_key_file)
    assert s.api_key == SecretKey(SENTINEL) and s.key_source == "env"
    assert s.base_url == DEFAULT_REAL_BASE_URL
    assert s.host == "api.goenhance.ai" and not s.is_embedded_simulator


def test_key_never_from_config(no_key_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.resolve(config={"api_key": SENTINEL}, env={}, key_file=no_key_file)
    assert SENTINEL not in str(info.value)


def test_explicit_key_beats_env(no_key_file: Path) -> None:
    s = Settings.resolve(
        explicit={"api_key": "sk-explicit"},
        env={"GOENHANCE_API_KEY": SENTINEL},
        key_file=no_key_file,
    )
    assert s.api_key is not None and s.api_key.reveal() == "sk-explicit"


def test_key_file_used_when_no_env(tmp_path: Path) -> None:
    path = write_key_file(SecretKey(SENTINEL), tmp_path / "cfg" / "api_key")
    assert (path.stat().st_mode & 0o777) == 0o600
    s = Settings.resolve(env={}, key_file=path)
    assert s.api_key == SecretKey(SENTINEL) and s.key_source == "key file"
    s = Settings.resolve(env={"GOENHANCE_API_KEY": "sk-env"}, key_file=path)
    assert s.api_key == SecretKey("sk-env")


def test_key_file_with_loose_mode_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api_key"
    path.write_text(SENTINEL)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        Settings.resolve(env={}, key_file=path)
    assert SENTINEL not in str(info.value)


def test_key_file_default_location_follows_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    write_key_file(SecretKey(SENTINEL))
    assert (tmp_path / "goenhance_nb" / "api_key").exists()
    assert Settings.resolve(env={}).api_key == SecretKey(SENTINEL)


def test_secret_key_never_shows() -> None:
    k = SecretKey(SENTINEL)
    shown = [repr(k), str(k), f"{k}", f"{k!r}", f"{k:>40}", f"{k}", "%s" % k, "%r" % (k,)]  # noqa: UP031 - %-formatting is a case under test
    for text in shown:
        assert SENTINEL not in text
        assert "***" in text
    s = Settings(api_key=k, base_url="http://127.0.0.1:1")
    assert SENTINEL not in repr(s) and SENTINEL not in str(s) and SENTINEL not in f"{s}"
    assert SENTINEL not in repr(dataclasses.asdict(s))
    assert copy.deepcopy(k) == k and copy.copy(k) is k
    with pytest.raises(TypeError):
        pickle.dumps(k)
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert k.reveal() == SENTINEL
    assert (
        k == SecretKey(SENTINEL)
        and k != SecretKey("other")
        and hash(k) == hash(SecretKey(SENTINEL))
    )


def test_secret_key_not_in_error_messages(no_key_file: Path) -> None:
    # An invalid value next to a key must not echo the key.
    with pytest.raises(ConfigError) as info:
        Settings.resolve(
            explicit={"api_key": SENTINEL, "max_retries": "many"}, env={}, key_file=no_key_file
        )
    assert SENTINEL not in str(info.value)
    err = AuthError(f"rejected {SecretKey(SENTINEL)}")
    assert SENTINEL not in str(err)


@pytest.mark.parametrize(
    "url", ["https://api.goenhance.ai", "https://10.0.0.5:8000", "https://sim.example:443"]
)
def test_poll_floor_for_non_loopback(url: str, no_key_file: Path) -> None:
    with pytest.warns(SettingsWarning, match="5s floor"):
        s = Settings.resolve(
            explicit={"poll_interval": 0.5, "base_url": url}, env={}, key_file=no_key_file
        )
    assert s.poll_interval == 5.0
    with pytest.warns(SettingsWarning):
        assert s.with_(poll_interval=1).poll_interval == 5.0


@pytest.mark.parametrize(
    "url", [None, "http://127.0.0.1:8123", "http://localhost:1", "http://[::1]:9"]
)
def test_no_floor_on_loopback(url: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = Settings(base_url=url, poll_interval=0.2)
    assert s.poll_interval == 0.2 and s.is_loopback


def test_host_never_contains_port() -> None:
    # the backend identity is the Session's (it asks the server, DECISIONS 26); Settings only
    # give the host it is built from, never with a port
    assert Settings(base_url="https://api.goenhance.ai:8443/").host == "api.goenhance.ai"
    assert Settings(base_url="http://127.0.0.1:5555").host == "127.0.0.1"


def test_with_validates() -> None:
    s = Settings()
    assert s.with_(budget=10).budget == 10 and s.budget is None
    with pytest.raises(ConfigError):
        s.with_(colour="red")
    with pytest.raises(ConfigError):
        s.with_(max_retries=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.budget = 3  # type: ignore[misc]


def test_key_added_later_means_real_api_with_floor(no_key_file: Path) -> None:
    # %goenhance login: settings resolved without a key (simulator), then a key is added
    s = Settings.resolve(config={"poll_interval": 1.0}, env={}, key_file=no_key_file)
    assert s.is_embedded_simulator and s.poll_interval == 1.0
    with pytest.warns(SettingsWarning):
        s2 = s.with_(api_key=SecretKey(SENTINEL))
    assert s2.base_url == DEFAULT_REAL_BASE_URL and not s2.is_embedded_simulator
    assert s2.poll_interval == 5.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"api_key": 5}, "api_key must be a str or SecretKey"),
        ({"poll_interval": -1}, "poll_interval must be a number >= 0, got -1"),
        ({"max_input_mb": float("nan")}, "max_input_mb must be a number >= 0, got nan"),
        ({"rate_limit": True}, "rate_limit must be a number >= 0, got True"),
        ({"job_timeout": 0}, "request_timeout and job_timeout must be > 0"),
        ({"request_timeout": 0.0}, "request_timeout and job_timeout must be > 0"),
        ({"max_retries": 1.0}, "max_retries must be an integer >= 0, got 1.0"),
        ({"budget": -1}, "budget must be an integer >= 0, got -1"),
        ({"mode": "LIVE"}, "mode must be one of live, record, replay, offline, got 'LIVE'"),
        ({"replay_backend": "h:1"}, "replay_backend must be 'simulated' or an API host"),
        ({"wait": "yes"}, "wait must be True, False or None, got 'yes'"),
        ({"base_url": "ftp://x"}, "base_url must be an http(s) URL with a host"),
    ],
)
def test_construction_checks_name_the_setting(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(**changes)
    assert str(info.value).startswith(message)


def test_construction_normalises() -> None:
    s = Settings(api_key="  ", output_dir="~/o", lockfile="~/l.json", cache_dir="~/c")
    assert s.api_key is None and s.base_url is None and s.is_embedded_simulator
    assert s.output_dir == Path("~/o").expanduser() and s.lockfile == Path("~/l.json").expanduser()
    assert s.cache_dir == Path("~/c").expanduser()
    keyed = Settings(api_key=SENTINEL)
    assert isinstance(keyed.api_key, SecretKey) and keyed.base_url == DEFAULT_REAL_BASE_URL


def test_the_settings_table_has_one_row_per_field() -> None:
    from goenhance_nb._settings import _SETTINGS

    assert set(_SETTINGS) == {f.name for f in dataclasses.fields(Settings)}
