"""Database URL resolution and validation (pure logic, no database)."""

from __future__ import annotations

import pytest

from jobqueue.config import redact, resolve_database, split_options, validate_url
from jobqueue.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBQUEUE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("JOBQUEUE_PREPARED_STATEMENTS", raising=False)


def test_explicit_url_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", "postgresql://a@h1/db")
    monkeypatch.setenv("DATABASE_URL", "postgresql://b@h2/db")
    target = resolve_database("postgresql://c@h3/db")
    assert (target.url, target.source) == ("postgresql://c@h3/db", "--database-url")


def test_jobqueue_variable_wins_over_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", "postgresql://a@h1/db")
    monkeypatch.setenv("DATABASE_URL", "postgresql://b@h2/db")
    assert resolve_database().source == "JOBQUEUE_DATABASE_URL"
    monkeypatch.delenv("JOBQUEUE_DATABASE_URL")
    assert resolve_database().source == "DATABASE_URL"


def test_blank_values_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", "  ")
    monkeypatch.setenv("DATABASE_URL", "postgres://b@h2/db")
    assert resolve_database("").source == "DATABASE_URL"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/db", "DATABASE_URL is not a PostgreSQL URL: scheme 'mysql'"),
        ("http://example.invalid/", "DATABASE_URL is not a PostgreSQL URL: scheme 'http'"),
        ("just-a-word", "DATABASE_URL is not a PostgreSQL URL or key=value"),
        ("host=x bogus_option=1", "DATABASE_URL is not a valid PostgreSQL URL: .*bogus_option"),
    ],
)
def test_non_postgres_urls_are_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        validate_url(url, "DATABASE_URL")


def test_key_value_conninfo_is_accepted() -> None:
    assert validate_url("host=/tmp dbname=x", "DATABASE_URL") == "host=/tmp dbname=x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("host=h password=s3cret dbname=d", "host=h password=*** dbname=d"),
    ],
)
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


# -- prepared statements: argument > URL parameter > JOBQUEUE_PREPARED_STATEMENTS > on -------


@pytest.mark.parametrize(
    ("url", "rest", "prepared"),
    [
        ("postgresql://u@h/db", "postgresql://u@h/db", None),
        ("postgresql://u@h/db?prepared_statements=off", "postgresql://u@h/db", False),
        ("postgresql://u@h/db?sslmode=require&prepared_statements=false", "postgresql://u@h/db?sslmode=require", False),
        ("postgresql://u@/db?host=%2Ftmp&prepared_statements=ON", "postgresql://u@/db?host=%2Ftmp", True),
        ("host=h dbname=d prepared_statements=0", "host=h dbname=d", False),
        ("prepared_statements=yes host=h", "host=h", True),
    ],
)
def test_the_url_parameter_is_taken_out_of_the_url(url: str, rest: str, prepared: bool | None) -> None:
    assert split_options(url, "DATABASE_URL") == (rest, prepared)
    assert validate_url(rest, "DATABASE_URL") == rest  # what is left is for libpq


def test_prepared_statements_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_database("postgresql://u@h/db").connect_kwargs() == {}
    monkeypatch.setenv("JOBQUEUE_PREPARED_STATEMENTS", "off")
    target = resolve_database("postgresql://u@h/db")
    assert (target.url, target.prepared_statements) == ("postgresql://u@h/db", False)
    assert target.connect_kwargs() == {"prepare_threshold": None}
    assert resolve_database("postgresql://u@h/db?prepared_statements=on").prepared_statements is True
    off = resolve_database("postgresql://u@h/db?prepared_statements=on", prepared_statements=False)
    assert off.connect_kwargs() == {"prepare_threshold": None}
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", "postgresql://u@h/db?prepared_statements=off")
    assert resolve_database().url == "postgresql://u@h/db"
    assert resolve_database(prepared_statements=True).prepared_statements is True


@pytest.mark.parametrize(
    ("env", "url", "message"),
    [
        ("maybe", "postgresql://u@h/db", "JOBQUEUE_PREPARED_STATEMENTS: expected on or off, not 'maybe'"),
        ("", "postgresql://u@h/db?prepared_statements=", "--database-url: prepared_statements: expected on or off"),
        ("", "host=h prepared_statements=2", "--database-url: prepared_statements: expected on or off, not '2'"),
    ],
)
def test_a_bad_prepared_statements_value_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, env: str, url: str, message: str
) -> None:
    monkeypatch.setenv("JOBQUEUE_PREPARED_STATEMENTS", env)
    with pytest.raises(ConfigurationError, match=message):
        resolve_database(url)
