"""The exception tree: shape, one-line rendering, no secrets or URL queries in messages."""

from __future__ import annotations

import pickle

import pytest

from goenhance_nb import _errors as E
from goenhance_nb._errors import redact_text, redact_url

SIGNED = "https://openapi-static.goenhance.ai/u/0b6f_0.mp4?q-sign-algorithm=sha1&q-ak=AKID&q-sign-time=1;2&q-signature=deadbeef"


def test_tree_matches_decisions_14() -> None:
    for cls in (
        E.ConfigError,
        E.AuthError,
        E.APIError,
        E.TransportError,
        E.JobFailed,
        E.JobTimedOut,
        E.ResultExpired,
        E.CacheError,
        E.LedgerError,
        E.InputError,
        E.BudgetExceeded,
    ):
        assert issubclass(cls, E.GoEnhanceError)
    for cls in (E.InsufficientCredits, E.InvalidParameters, E.RateLimited):
        assert issubclass(cls, E.APIError)
    assert not issubclass(E.InputError, E.ConfigError)
    assert not issubclass(E.TransportError, E.APIError)


@pytest.mark.parametrize(
    "exc",
    [
        E.ConfigError("bad value"),
        E.AuthError("the API rejected the key (HTTP 401)"),
        E.APIError(500, "Server Error", status=500),
        E.InsufficientCredits(402, "insufficient credits"),
        E.InvalidParameters(400, "invalid params: duration"),
        E.RateLimited(None, "too many", status=429, retry_after=3.0),
        E.TransportError("no answer"),
        E.JobFailed("u-1", "boom"),
        E.JobTimedOut("u-2"),
        E.ResultExpired("gone"),
        E.CacheError("x"),
        E.LedgerError("x"),
        E.InputError("x"),
        E.BudgetExceeded("x"),
    ],
)
def test_every_class_renders_one_line(exc: E.GoEnhanceError) -> None:
    lines = exc._render_traceback_()
    assert lines == [f"{type(exc).__name__}: {exc}"]
    assert "\n" not in lines[0]
    assert str(exc)


def test_api_error_fields() -> None:
    e = E.InsufficientCredits(402, "insufficient credits")
    assert (e.code, e.msg) == (402, "insufficient credits")
    assert "insufficient credits" in str(e) and "402" in str(e)
    r = E.RateLimited(429, "daily limit exceeded", retry_after=7.0)
    assert r.retry_after == 7.0
    j = E.JobFailed("abc", "model crashed")
    assert j.job_id == "abc" and "abc" in str(j) and "model crashed" in str(j)
    t = E.JobTimedOut("abc")
    assert t.job_id == "abc" and "resume" in str(t)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (SIGNED, "https://openapi-static.goenhance.ai/u/0b6f_0.mp4?…"),
        (
            "http://127.0.0.1:8000/sim/results/u/x.mp4?exp=1&sig=ab",
            "http://127.0.0.1:8000/sim/results/u/x.mp4?…",
        ),
        ("https://user:pw@h.example/p", "https://h.example/p"),
        ("https://h.example/p#frag", "https://h.example/p?…"),
        ("https://api.goenhance.ai", "https://api.goenhance.ai"),
        ("not a url?secret=1", "not a url?…"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_messages_never_carry_queries_bearer_or_newlines() -> None:
    e = E.ResultExpired(f"download of {SIGNED} failed\nsecond line")
    s = str(e)
    assert "q-signature" not in s and "deadbeef" not in s and "AKID" not in s
    assert "\n" not in s
    assert redact_text("Authorization: Bearer sk-abc123") == "Authorization: Bearer ***"
    api = E.APIError(1, f"bad url {SIGNED}")
    assert "deadbeef" not in str(api) and "deadbeef" not in api.msg


def test_errors_pickle_round_trip() -> None:
    # Errors cross threads and processes (engine -> caller); they must survive pickling.
    for exc in (
        E.JobFailed("u", "m"),
        E.RateLimited(1, "rate", retry_after=2.0),
        E.JobTimedOut("u"),
        E.TransportError("t"),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
    assert pickle.loads(pickle.dumps(E.RateLimited(1, "rate", retry_after=2.0))).retry_after == 2.0


def test_key_shaped_tokens_are_masked() -> None:
    real = "sk-" + "A1b2C3d4E5f6G7h8I9j0"
    sim = "sim-" + "0123456789abcdef" * 2
    e = E.TransportError(f"oops {real} and {sim}")
    assert real not in str(e) and sim not in str(e)
    assert "sk-***" in str(e) and "sim-***" in str(e)
    assert redact_text("sim-user-db7e41ab waits") == "sim-user-db7e41ab waits"  # short ids stay
