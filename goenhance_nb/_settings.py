"""Settings: one frozen object resolved from explicit arguments, config, environment, defaults.

Precedence (highest first): explicit argument (Python call) > ``config`` mapping (``%config
GoEnhanceMagics.*`` traitlets) > environment (``GOENHANCE_*``) > key file (API key only) >
defaults. The API key never comes from ``config`` (DECISIONS 16) and is held in a
:class:`SecretKey`, whose ``repr``/``str``/``format`` never show it and which refuses pickling.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from goenhance_nb._errors import ConfigError, brief

#: Requests per second to a remote API when the rate_limit setting is not given.
DEFAULT_RATE_LIMIT = 5.0

__all__ = [
    "DEFAULT_REAL_BASE_URL",
    "MODES",
    "POLL_FLOOR_SECONDS",
    "SecretKey",
    "Settings",
    "SettingsWarning",
    "is_loopback_host",
    "key_file_path",
    "write_key_file",
]

DEFAULT_REAL_BASE_URL = "https://api.goenhance.ai"
POLL_FLOOR_SECONDS = 5.0
#: Reproducibility modes (issue 14): live (no lockfile), record (live + lockfile), replay
#: (results only from the cache or an imported bundle), offline (no network at all).
MODES = ("live", "record", "replay", "offline")
_MASK = "SecretKey('***')"


class SettingsWarning(UserWarning):
    """A setting was adjusted (e.g. the poll interval raised to the 5 s floor)."""


class SecretKey:
    """An API key that never shows itself.

    ``repr``, ``str``, ``format`` and f-strings give ``SecretKey('***')``; pickling raises
    ``TypeError``; ``copy``/``deepcopy`` return the same object. Use :meth:`reveal` only where the
    key goes on the wire. Equality and hashing compare the key value.

    Surrounding whitespace is stripped. Every way a key is set (environment, key file,
    ``Settings.resolve``, ``%goenhance login``) builds a ``SecretKey``, so the character check
    is shared: :raises ConfigError: the key holds a character an HTTP header cannot carry as
    sent (non-ASCII, a control character such as a newline, or a space); the message never
    contains the key.
    """

    __slots__ = ("__value",)  # mangled to _SecretKey__value, like the attribute

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("SecretKey takes a str")
        value = value.strip()
        _check_key_characters(value)
        self.__value = value

    def reveal(self) -> str:
        """Return the key itself (for the Authorization header only)."""
        return self.__value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretKey):
            return self.__value == other.__value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("SecretKey", self.__value))

    def __bool__(self) -> bool:
        return bool(self.__value)

    def __copy__(self) -> SecretKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretKey:
        return self

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("SecretKey cannot be pickled (it would write the API key out)")

    def __getstate__(self) -> Any:
        raise TypeError("SecretKey cannot be pickled (it would write the API key out)")


def _check_key_characters(value: str) -> None:
    """Refuse a key that is not printable ASCII without spaces (``!``..``~``).

    The message names the kind of character and its position, never the key or the character.

    :raises ConfigError: a non-ASCII, control or space character.
    """
    for i, ch in enumerate(value, start=1):
        if "!" <= ch <= "~":
            continue
        if not ch.isascii():
            kind = "a non-ASCII character"
        elif ch == " ":
            kind = "a space"
        else:
            kind = "a control character (e.g. a newline or tab)"
        raise ConfigError(
            f"the API key contains {kind} at position {i} of {len(value)}; API keys are "
            "printable ASCII: copy the key again from your GoEnhance account"
        )


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (decides the poll floor and whether plain
    ``http://`` is allowed; never whether a server is the simulator, DECISIONS 26)."""
    if not host:
        return False
    h = host.strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def key_file_path() -> Path:
    """The API key file: ``platformdirs.user_config_path("goenhance_nb") / "api_key"``."""
    return platformdirs.user_config_path("goenhance_nb") / "api_key"


def _read_key_file(path: Path) -> SecretKey | None:
    """Read the key file; ``None`` if absent or empty.

    :raises ConfigError: the file is readable by group/others (must be mode 0600) or unreadable.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the key file {path} is accessible by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
    return SecretKey(text) if text else None


def write_key_file(key: SecretKey, path: Path | None = None) -> Path:
    """Save ``key`` to the key file (mode 0600, written atomically); return its path.

    :raises ConfigError: the file cannot be written.
    """
    path = path or key_file_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".api_key.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(key.reveal() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write the key file {path}: {exc.strerror}") from None
    return path


def _default_cache_dir() -> Path:
    return platformdirs.user_cache_path("goenhance_nb")


@dataclass(frozen=True, slots=True)
class Settings:
    """All configuration of a session. Build with :meth:`resolve`; change with :meth:`with_`.

    Construction validates values (``ConfigError``), normalises ``base_url`` (no trailing
    slash; a key without a base URL means ``https://api.goenhance.ai``; plain ``http://`` only
    for a loopback host, since the key would travel in clear) and raises ``poll_interval`` to
    5 s for a non-loopback host, with a :class:`SettingsWarning` (DECISIONS 6).

    Settings do not say whether a base URL is a simulator: the :class:`Session` asks the server
    once (DECISIONS 26) and holds the answer in ``Session.backend``.
    """

    api_key: SecretKey | None = None
    base_url: str | None = None  # None = embedded simulator (resolved by Session)
    cache_dir: Path = field(default_factory=_default_cache_dir)
    poll_interval: float = 5.0
    job_timeout: float = 1800.0
    request_timeout: float = 30.0
    rate_limit: float | None = None  # requests/s to /api/; None: rate_limit_for() decides
    max_retries: int = 4
    output_dir: Path | None = None
    budget: int | None = None
    max_upload_mb: float = 50.0
    embed_limit_mb: float = 8.0
    wait: bool | None = None
    max_result_mb: float = 2048.0  # cap on a result download, checked as bytes arrive
    max_input_mb: float = 2048.0  # cap on an input URL download (simulator; the real API: upload)
    key_source: str | None = None  # "explicit" | "env" | "key file" | None (never the key)
    mode: str | None = None  # live | record | replay | offline; None = auto (see Session.mode)
    lockfile: Path | None = None  # None = goenhance.lock.json in the notebook's folder
    replay_backend: str | None = None  # backend identity in replay/offline ("simulated" or a host)
    shared_store: str | None = None  # fsspec URL of the team's shared store (issue 16); None: off

    def __post_init__(self) -> None:
        for name, setting in _SETTINGS.items():
            value = getattr(self, name)
            checked = setting.check(name, value)
            if checked is not value:
                object.__setattr__(self, name, checked)
        if self.base_url is None and self.api_key is not None:
            # a key with no base URL means the real API (and so the 5 s poll floor)
            object.__setattr__(self, "base_url", DEFAULT_REAL_BASE_URL)
        if self.poll_interval < POLL_FLOOR_SECONDS and not self.is_loopback:
            warnings.warn(
                f"poll_interval {self.poll_interval:g}s is below the {POLL_FLOOR_SECONDS:g}s "
                f"floor for {self.host}; using {POLL_FLOOR_SECONDS:g}s",
                SettingsWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "poll_interval", POLL_FLOOR_SECONDS)

    @property
    def host(self) -> str | None:
        """The API host (``None`` for the embedded simulator)."""
        return urlsplit(self.base_url).hostname if self.base_url else None

    @property
    def is_loopback(self) -> bool:
        """True when requests stay on this machine (the embedded simulator, or a loopback
        base URL). This decides the 5 s poll floor only (DECISIONS 6/26): whether a base URL is
        our simulator is learnt by asking it (``Session.backend``), never from its host."""
        return self.base_url is None or is_loopback_host(self.host)

    def rate_limit_for(self, base_url: str) -> float:
        """Requests per second the client allows itself to ``base_url``'s ``/api/`` routes.

        The ``rate_limit`` setting when given (0: no limit); else :data:`DEFAULT_RATE_LIMIT`
        for a remote API and no limit for a loopback server, like the 5 s poll floor
        (DECISIONS 6): the limit protects the real service, and a local simulator polled
        faster than 5 s would otherwise queue its own polls behind it.
        """
        if self.rate_limit is not None:
            return float(self.rate_limit)
        return 0.0 if is_loopback_host(urlsplit(base_url).hostname) else DEFAULT_RATE_LIMIT

    @property
    def is_embedded_simulator(self) -> bool:
        """True when no base URL is set: the Session starts (or finds) the embedded simulator."""
        return self.base_url is None

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated like a fresh construction).

        :raises ConfigError: unknown field or invalid value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def __reduce__(self) -> Any:
        raise TypeError("Settings cannot be pickled (it holds the API key)")

    def __copy__(self) -> Settings:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Settings:
        return self

    @classmethod
    def resolve(
        cls,
        explicit: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        *,
        key_file: Path | None = None,
    ) -> Settings:
        """Build settings: explicit > config > environment > key file (key only) > defaults.

        ``None`` values in ``explicit``/``config`` count as "not given". ``env`` defaults to
        ``os.environ``; ``key_file`` defaults to :func:`key_file_path`. A key with no base URL
        means the real API (``https://api.goenhance.ai``); no key and no base URL means the
        embedded simulator (``base_url=None``).

        :raises ConfigError: an unknown name, an unparsable value, a key in ``config``, or a key
            file readable by others.
        """
        env = os.environ if env is None else env
        explicit = {k: v for k, v in (explicit or {}).items() if v is not None}
        config = {k: v for k, v in (config or {}).items() if v is not None}
        names = set(_SETTINGS) - {"key_source"}
        for src, m in (("argument", explicit), ("config", config)):
            unknown = sorted(set(m) - names)
            if unknown:
                raise ConfigError(f"unknown setting(s) in {src}: {', '.join(unknown)}")
        if "api_key" in config:
            raise ConfigError(
                "the API key cannot be set through %config (a cell's text is saved); "
                "use GOENHANCE_API_KEY, the key file, or %goenhance login"
            )
        values: dict[str, Any] = {}
        for name in sorted(names - {"api_key"}):
            given = _given(name, explicit, config, env)
            parse = _SETTINGS[name].parse
            if given is not None and parse is not None:
                values[name] = parse(*given)
        key, key_source = _resolve_key(explicit, env, key_file)
        if key is not None and "base_url" not in values:
            values["base_url"] = DEFAULT_REAL_BASE_URL
        return cls(api_key=key, key_source=key_source, **values)


def _given(
    name: str, explicit: Mapping[str, Any], config: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[Any, str] | None:
    """The raw value of setting ``name`` and where it came from (named in a parse error):
    explicit argument > ``%config`` traitlet > ``GOENHANCE_<NAME>`` (not blank) > ``None``."""
    env_name = f"GOENHANCE_{name.upper()}"
    if name in explicit:
        return explicit[name], f"argument {name}"
    if name in config:
        return config[name], f"GoEnhanceMagics.{name}"
    if env.get(env_name, "").strip():
        return env[env_name].strip(), env_name
    return None


def _resolve_key(
    explicit: Mapping[str, Any], env: Mapping[str, str], key_file: Path | None
) -> tuple[SecretKey | None, str | None]:
    """The API key and where it came from: explicit argument > ``GOENHANCE_API_KEY`` > key
    file; ``(None, None)`` when none (or an empty one) is found.

    :raises ConfigError: a key with characters a header cannot carry, or see
        :func:`_read_key_file`.
    """
    key: SecretKey | None
    if "api_key" in explicit:
        raw_key = explicit["api_key"]
        key = raw_key if isinstance(raw_key, SecretKey) else SecretKey(str(raw_key))
        key_source: str | None = "explicit"
    elif env.get("GOENHANCE_API_KEY", "").strip():
        key, key_source = SecretKey(env["GOENHANCE_API_KEY"]), "env"
    else:
        key, key_source = _read_key_file(key_file or key_file_path()), "key file"
    return (key, key_source) if key else (None, None)


def _check_base_url(url: object) -> str:
    """Normalise and check a base URL (http(s), a host, no credentials/query/fragment, https
    unless loopback). :raises ConfigError: otherwise."""
    if not isinstance(url, str):
        raise ConfigError("base_url must be a string")
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError("base_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "base_url must be an http(s) URL with a host, e.g. https://api.goenhance.ai"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError("base_url must not contain credentials, a query or a fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"base_url {brief(url, quote=False)} uses plain http to another machine: the API key "
            "would travel in clear; use https (plain http is only for loopback hosts)"
        )
    return url


def _float(raw: Any, src: str) -> float:
    try:
        if isinstance(raw, bool):
            raise ValueError
        return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{src} must be a number, got {brief(raw)}") from None


def _int(raw: Any, src: str) -> int:
    try:
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, float):
            if not raw.is_integer():
                raise ValueError
            return int(raw)
        return int(str(raw).strip())
    except (TypeError, ValueError):
        raise ConfigError(f"{src} must be an integer, got {brief(raw)}") from None


def _bool_or_none(raw: Any, src: str) -> bool | None:
    if isinstance(raw, bool):
        return raw
    s = str(raw).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    if s in ("", "auto", "none"):
        return None
    raise ConfigError(f"{src} must be 1/0, true/false or auto, got {brief(raw)}")


def _path(raw: Any, src: str) -> Path:
    if not isinstance(raw, (str, os.PathLike)) or not str(raw).strip():
        raise ConfigError(f"{src} must be a path, got {brief(raw)}")
    return Path(os.fspath(raw)).expanduser()


def _mode(raw: Any, src: str) -> str:
    mode = str(raw).strip().lower()
    if mode not in MODES:
        raise ConfigError(f"{src} must be one of {', '.join(MODES)}, got {brief(raw)}")
    return mode


def _str(raw: Any, src: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{src} must be a string")
    return raw


# -- checks of constructed values (names the setting; ``Settings.__post_init__``) ---------


def _api_key(name: str, value: object) -> SecretKey | None:
    """A ``SecretKey`` from a str or ``SecretKey``; ``None`` for an empty one.

    :raises ConfigError: any other type, or see :class:`SecretKey`.
    """
    if value is not None and not isinstance(value, SecretKey):
        if not isinstance(value, str):
            raise ConfigError("api_key must be a str or SecretKey")
        value = SecretKey(value) if value.strip() else None
    return value if value else None


def _base_url(name: str, value: object) -> str | None:
    return None if value is None else _check_base_url(value)


def _expand(name: str, value: Any) -> Path:
    return Path(value).expanduser()  # a non-path value fails here with TypeError, as ever


def _optional_expand(name: str, value: object) -> Path | None:
    return None if value is None else _expand(name, value)


def _non_negative(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or value < 0
    ):
        raise ConfigError(f"{name} must be a number >= 0, got {brief(value)}")
    return value


def _optional_non_negative(name: str, value: object) -> float | None:
    return None if value is None else _non_negative(name, value)


def _timeout(name: str, value: object) -> float:
    seconds = _non_negative(name, value)
    if seconds <= 0:
        raise ConfigError("request_timeout and job_timeout must be > 0")
    return seconds


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {brief(value)}")
    return value


def _optional_count(name: str, value: object) -> int | None:
    return None if value is None else _count(name, value)


def _mode_value(name: str, value: object) -> object:
    if value is not None and value not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {brief(value)}")
    return value


def _replay_backend(name: str, value: object) -> object:
    if value is not None and (not isinstance(value, str) or not value.strip() or ":" in value):
        raise ConfigError(
            "replay_backend must be 'simulated' or an API host (no scheme or port), "
            f"got {brief(value)}"
        )
    return value


def _shared_store(name: str, value: object) -> object:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(
            "shared_store must be an fsspec URL (s3://bucket/prefix, gs://..., a folder), "
            f"got {brief(value)}"
        )
    return value.strip() if isinstance(value, str) else value


def _wait(name: str, value: object) -> object:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"wait must be True, False or None, got {brief(value)}")
    return value


def _as_given(name: str, value: object) -> object:
    return value


@dataclass(frozen=True, slots=True)
class _Setting:
    """How one setting is read and checked.

    ``parse(raw, source)`` turns a value given to :meth:`Settings.resolve` (an argument, a
    ``%config`` traitlet or an environment string) into the field's type (``None``: never
    given that way); ``check(name, value)`` validates (and may normalise) the constructed value.
    Both raise ``ConfigError`` naming the setting.
    """

    parse: Callable[[Any, str], object] | None
    check: Callable[[str, Any], object] = _as_given


#: Every setting, in the order :meth:`Settings.__post_init__` checks them.
_SETTINGS: Mapping[str, _Setting] = {
    "api_key": _Setting(None, _api_key),
    "base_url": _Setting(_str, _base_url),
    "cache_dir": _Setting(_path, _expand),
    "output_dir": _Setting(_path, _optional_expand),
    "poll_interval": _Setting(_float, _non_negative),
    "job_timeout": _Setting(_float, _timeout),
    "request_timeout": _Setting(_float, _timeout),
    "rate_limit": _Setting(_float, _optional_non_negative),
    "max_upload_mb": _Setting(_float, _non_negative),
    "embed_limit_mb": _Setting(_float, _non_negative),
    "max_result_mb": _Setting(_float, _non_negative),
    "max_input_mb": _Setting(_float, _non_negative),
    "max_retries": _Setting(_int, _count),
    "budget": _Setting(_int, _optional_count),
    "mode": _Setting(_mode, _mode_value),
    "lockfile": _Setting(_path, _optional_expand),
    "replay_backend": _Setting(_str, _replay_backend),
    "shared_store": _Setting(_str, _shared_store),
    "wait": _Setting(_bool_or_none, _wait),
    "key_source": _Setting(None),
}
