"""jobqueue.cron_next against cronsim, the Python library whose semantics it implements.

Hypothesis draws cron expressions from the grammar jobqueue accepts (fields with ranges,
steps, lists, month and day names, the optional trailing seconds field, macros), instants
(uniform over 1990-2060 and clustered around the DST transitions of the zones drawn) and time
zones (UTC, fixed offsets, and zones with DST gaps and overlaps of 1 h, 30 min, at midnight),
and asserts that the SQL function returns exactly cronsim's next fire time. Bad expressions
are checked the other way round: whatever cronsim refuses (less its L, W and # extensions),
the SQL refuses too, naming the field and its position.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from cronsim import CronSim, CronSimError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("CRON_EXAMPLES", "400"))

ZONES = [
    "UTC",
    "Europe/Berlin",  # 02:00 -> 03:00 in March, 03:00 -> 02:00 in October
    "America/New_York",
    "Australia/Sydney",  # southern hemisphere
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Havana",  # transitions at midnight (00:00 is skipped / repeated)
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "Europe/London",
]

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def _value(draw: Any, lo: int, hi: int, names: list[str] | None, base: int) -> tuple[int, str]:
    v = draw(st.integers(lo, hi))
    if names and lo <= v - base < len(names) and draw(st.booleans()):
        text = names[v - base]
        return v, draw(st.sampled_from([text, text.lower(), text.title()]))
    return v, str(v)


@st.composite
def field(draw: Any, lo: int, hi: int, names: list[str] | None = None, base: int = 0) -> str:
    def term() -> str:
        kind = draw(st.sampled_from(["star", "value", "range", "star_step", "value_step", "range_step"]))
        if kind == "star":
            return "*"
        if kind == "star_step":
            return f"*/{draw(st.integers(1, hi - lo + 2))}"
        a, ta = _value(draw, lo, hi, names, base)
        if kind == "value":
            return ta
        if kind == "value_step":
            return f"{ta}/{draw(st.integers(1, hi - lo + 2))}"
        _, tb = _value(draw, a, hi, names, base)
        if kind == "range":
            return f"{ta}-{tb}"
        return f"{ta}-{tb}/{draw(st.integers(1, hi - lo + 2))}"

    n = draw(st.integers(1, 3))
    return ",".join(term() for _ in range(n))


@st.composite
def expressions(draw: Any) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(sorted(MACROS)))
    # favour the shapes with DST behaviour of their own: a fixed minute and hour
    fixed = draw(st.booleans())
    minute = str(draw(st.integers(0, 59))) if fixed and draw(st.booleans()) else draw(field(0, 59))
    hour = str(draw(st.integers(0, 23))) if fixed else draw(field(0, 23))
    dom = "*" if draw(st.booleans()) else draw(field(1, 31))
    month = "*" if draw(st.booleans()) else draw(field(1, 12, MONTHS, 1))
    dow = "*" if draw(st.booleans()) else draw(field(0, 7, DAYS, 0))
    parts = [minute, hour, dom, month, dow]
    if draw(st.integers(0, 3)) == 0:
        parts.append(draw(field(0, 59)))
    return " ".join(parts)


@cache
def transitions(zone: str) -> list[datetime]:
    """UTC instants, 1995-2045, at which the zone's offset changes (to the minute)."""
    tz = ZoneInfo(zone)
    found: list[datetime] = []
    t = datetime(1995, 1, 1, tzinfo=UTC)
    end = datetime(2045, 1, 1, tzinfo=UTC)
    off = t.astimezone(tz).utcoffset()
    while t < end:
        nxt = t + timedelta(hours=6)
        if nxt.astimezone(tz).utcoffset() != off:
            lo, hi = t, nxt
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == off:
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
            off = nxt.astimezone(tz).utcoffset()
        t = nxt
    return found


@st.composite
def instants(draw: Any, zone: str) -> datetime:
    edges = transitions(zone)
    if edges and draw(st.booleans()):
        edge = draw(st.sampled_from(edges))
        return edge + timedelta(seconds=draw(st.integers(-3 * 86400, 3 * 86400)))
    seconds = draw(st.integers(0, 70 * 365 * 86400))
    return datetime(1990, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=draw(st.integers(0, 999999)))


def reference(expr: str, after: datetime, zone: str, n: int) -> list[datetime]:
    """cronsim's next n fire times, for jobqueue's expression syntax."""
    parts = MACROS.get(expr.strip().lower(), expr).split()
    if len(parts) == 6:  # jobqueue (like croniter) puts seconds last; cronsim first
        parts = [parts[5], *parts[:5]]
    it = CronSim(" ".join(parts), after.astimezone(ZoneInfo(zone)))
    out: list[datetime] = []
    for _ in range(n):
        try:
            out.append(next(it).astimezone(UTC))
        except StopIteration:
            break
    return out


def sql_next(db: psycopg.Connection[Any], expr: str, after: datetime, zone: str, n: int) -> list[datetime]:
    got = db.execute(
        "SELECT t FROM jobqueue.cron_next(expr => %s, after => %s, tz => %s, n => %s) AS t", (expr, after, zone, n)
    ).fetchall()
    return [r["t"].astimezone(UTC) for r in got]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), expr=expressions(), zone=st.sampled_from(ZONES))
@example(data=None, expr="30 2 * * *", zone="Europe/Berlin")  # skipped: runs at 03:00
@example(data=None, expr="30 2 * * *", zone="America/New_York")  # repeated: runs once
@example(data=None, expr="*/15 * * * *", zone="Europe/Berlin")  # elapsed time: both 02:xx
@example(data=None, expr="0 0 * * *", zone="America/Havana")  # midnight skipped
@example(data=None, expr="15 * * * * */20", zone="Australia/Lord_Howe")
def test_cron_next_matches_cronsim(db: psycopg.Connection[Any], data: Any, expr: str, zone: str) -> None:
    if data is None:  # the explicit examples: just before each transition of 2026
        edges = [e - timedelta(hours=3) for e in transitions(zone) if e.year == 2026]
        starts = edges or [datetime(2026, 3, 1, tzinfo=UTC)]
    else:
        starts = [data.draw(instants(zone))]
    for after in starts:
        want = reference(expr, after, zone, 1)
        got = sql_next(db, expr, after, zone, 1)
        assert got == want, f"cron_next({expr!r}, {after.isoformat()}, {zone!r})"


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "America/Havana", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expr", ["30 2 * * *", "0 0 * * *", "*/20 * * * *", "0,30 1-3 * * *", "0 */3 * * * 0"])
def test_series_across_a_year_of_transitions(db: psycopg.Connection[Any], expr: str, zone: str) -> None:
    """Chained fire times around every DST transition of 2026: the series is cronsim's."""
    for edge in transitions(zone):
        if edge.year != 2026:
            continue
        after = edge - timedelta(hours=5)
        assert sql_next(db, expr, after, zone, 12) == reference(expr, after, zone, 12), (expr, zone, edge)


def test_documented_dst_examples(db: psycopg.Connection[Any]) -> None:
    berlin_spring = datetime(2026, 3, 28, 12, tzinfo=UTC)
    # 02:30 does not exist on 29 March 2026 in Berlin: the job runs at 03:00 CEST (01:00 UTC)
    assert sql_next(db, "30 2 * * *", berlin_spring, "Europe/Berlin", 2) == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]
    # 02:30 happens twice on 25 October 2026: the job runs once, at the first (CEST)
    berlin_autumn = datetime(2026, 10, 24, 12, tzinfo=UTC)
    assert sql_next(db, "30 2 * * *", berlin_autumn, "Europe/Berlin", 2) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]
    # an hourly-or-finer expression follows elapsed time: every 30 minutes of the repeated hour
    got = sql_next(db, "*/30 * * * *", datetime(2026, 10, 25, 0, 10, tzinfo=UTC), "Europe/Berlin", 4)
    assert got == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(4)]


BAD_CHARS = "0123456789*/-, LW#?abcJANSUNmonx@"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    parts=st.lists(st.text(alphabet=BAD_CHARS.replace(" ", ""), min_size=1, max_size=6), min_size=4, max_size=7),
)
def test_sql_refuses_what_cronsim_refuses(db: psycopg.Connection[Any], parts: list[str]) -> None:
    expr = " ".join(parts)
    extension = any(c in expr.upper() for c in "LW#")  # cronsim's extensions jobqueue leaves out
    try:
        reference(expr, datetime(2026, 1, 1, tzinfo=UTC), "UTC", 1)
        cronsim_ok = True
    except CronSimError:
        cronsim_ok = False
    try:
        sql_next(db, expr, datetime(2026, 1, 1, tzinfo=UTC), "UTC", 1)
        sql_ok = True
    except psycopg.errors.InvalidParameterValue as exc:
        sql_ok = False
        assert exc.diag.column_name == "expr"
        assert str(exc.diag.message_primary).startswith("expr: ")
    if extension:
        assert not sql_ok or cronsim_ok
    else:
        assert sql_ok == cronsim_ok, expr


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", 'expr: minute field "61" at position 1: 61 is not between 0 and 59'),
        ("0 24 * * *", 'expr: hour field "24" at position 3: 24 is not between 0 and 23'),
        ("0 0 31 2 *", 'expr: day-of-month field "31" at position 5: day 31 never occurs in the months given (2)'),
        ("0 0 * FOO *", 'expr: month field "FOO" at position 7: "FOO" is not a number or a month name (JAN-DEC)'),
        ("0 0 * * 1-8", 'expr: day-of-week field "1-8" at position 9: 8 is not between 0 and 7'),
        ("0 0 * * 5-1", 'expr: day-of-week field "5-1" at position 9: the range "5-1" goes backwards'),
        ("*/0 * * * *", 'expr: minute field "*/0" at position 1: a step must be at least 1'),
        ("0 0 L * *", 'expr: day-of-month field "L" at position 5: "L" is not supported (no L, W or #)'),
        ("0 0 * * 5#2", 'expr: day-of-week field "5#2" at position 9: "5#2" is not supported (no L, W or #)'),
        ("* * * * * 60", 'expr: second field "60" at position 11: 60 is not between 0 and 59'),
        ("* * * *", "expr: has 4 fields; expected 5 (minute hour day-of-month month day-of-week) "
         "or 6 (the same and a second)"),
        ("@reboot", 'expr: unknown macro "@reboot" (known: @hourly, @daily, @midnight, @weekly, @monthly, '
         "@yearly, @annually)"),
    ],
)
def test_bad_expressions_name_the_field_and_position(db: psycopg.Connection[Any], expr: str, message: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        sql_next(db, expr, datetime(2026, 1, 1, tzinfo=UTC), "UTC", 1)
    assert info.value.diag.message_primary == message
    assert info.value.diag.column_name == "expr"


def test_unknown_time_zone_is_refused(db: psycopg.Connection[Any]) -> None:
    for zone in ("Mars/Olympus", "", "+03:00"):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            sql_next(db, "* * * * *", datetime(2026, 1, 1, tzinfo=UTC), zone, 1)
        assert info.value.diag.column_name == "tz"
