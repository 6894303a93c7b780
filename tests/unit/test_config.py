"""Database URL resolution and validation (pure logic, no database)."""

from __future__ import annotations

import pytest

from jobqueue.config import redact, resolve_database, validate_url
from jobqueue.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBQUEUE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)


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
