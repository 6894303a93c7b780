"""Exceptions -> error classes, and handler control flow (pure logic)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.models import ErrorClass
from jobqueue.retry import Cancel, Retry, Shutdown, Snooze, as_timedelta, classify


class HttpError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class ClientError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__("client error")
        self.response = Response(status)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), ErrorClass.TIMEOUT),
        (ConnectionResetError(), ErrorClass.TRANSIENT),
        (ConnectionRefusedError(), ErrorClass.TRANSIENT),
        (ValueError("bad"), ErrorClass.VALIDATION),
        (json.JSONDecodeError("x", "doc", 0), ErrorClass.VALIDATION),
        (KeyError("k"), ErrorClass.VALIDATION),
        (PermissionError(), ErrorClass.PERMANENT),
        (OSError("disk"), ErrorClass.SYSTEM),
        (RuntimeError("?"), ErrorClass.TRANSIENT),
    ],
)
def test_default_table(exc: BaseException, expected: ErrorClass) -> None:
    assert classify(exc) is expected


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_retryable_http_statuses_are_transient(status: int) -> None:
    assert classify(HttpError(status)) is ErrorClass.TRANSIENT
    assert classify(ClientError(status)) is ErrorClass.TRANSIENT


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422, 451])
def test_client_http_statuses_are_permanent(status: int) -> None:
    assert classify(HttpError(status)) is ErrorClass.PERMANENT


def test_error_class_attribute_wins() -> None:
    exc = ValueError("x")
    exc.error_class = "system"  # type: ignore[attr-defined]
    assert classify(exc) is ErrorClass.SYSTEM


def test_user_table_beats_defaults_and_uses_the_nearest_base() -> None:
    class PaymentDeclined(ValueError):
        pass

    class CardExpired(PaymentDeclined):
        pass

    table = {PaymentDeclined: "business", ValueError: ErrorClass.TRANSIENT}
    assert classify(CardExpired(), table) is ErrorClass.BUSINESS
    assert classify(ValueError(), table) is ErrorClass.TRANSIENT
    assert classify(TypeError(), table) is ErrorClass.VALIDATION


def test_unknown_error_class_in_table_is_refused() -> None:
    with pytest.raises(ValueError):
        classify(RuntimeError(), {RuntimeError: "sometimes"})


def test_control_flow_exceptions() -> None:
    assert Retry(after=5).after == timedelta(seconds=5)
    assert Retry().after is None
    assert Snooze(timedelta(minutes=1)).delay == timedelta(minutes=1)
    assert Cancel("no longer needed").reason == "no longer needed"
    # A handler's `except Exception` must not swallow a worker shutdown.
    assert not issubclass(Shutdown, Exception)


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False) | st.integers(min_value=0, max_value=10**7))
def test_as_timedelta_round_trips_seconds(value: float) -> None:
    td = as_timedelta(value)
    assert td is not None and abs(td.total_seconds() - value) < 1e-3


@pytest.mark.parametrize("bad", ["5", True, [1]])
def test_as_timedelta_refuses_non_numbers(bad: object) -> None:
    with pytest.raises(TypeError):
        as_timedelta(bad)  # type: ignore[arg-type]
