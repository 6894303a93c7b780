"""Pure parts of the dashboard: redirect targets stay on the site, CSRF tokens, cursors."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from jobqueue.web.dashboard import _local_path, csrf_token


@pytest.mark.parametrize("target", ["/", "/jobs?queue=a", "/jobs/12"])
def test_local_paths_are_kept(target: str) -> None:
    assert _local_path(target)


@pytest.mark.parametrize("target", ["//evil.example", "/\\evil.example", "https://evil.example/", "jobs", "", "/a\\b"])
def test_other_targets_are_refused(target: str) -> None:
    assert not _local_path(target)


def test_csrf_token_is_per_session_token_and_not_the_token() -> None:
    a, b = csrf_token("jq_a"), csrf_token("jq_b")
    assert a != b and len(a) == 64 and "jq_a" not in a
    assert csrf_token("jq_a") == a
