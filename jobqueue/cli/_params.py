"""What a verb accepts: parameter types, the options verbs share, and JSON documents.

Parsing only: every check made here is also made by the library and the SQL API, so a
value refused here would be refused there too, with the same field named. Bad data (a
payload that is not a JSON object, NaN, an empty file) is ``InvalidInput``: exit 65,
nothing written.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import click

from jobqueue.errors import InvalidInput
from jobqueue.models import JobState, Priority

F = TypeVar("F", bound=Callable[..., Any])

# -- parameter types ---------------------------------------------------------------------------

if TYPE_CHECKING:
    ParamTypeBase: TypeAlias = click.ParamType[Any]
else:  # older click: ParamType is not generic at run time
    ParamTypeBase = click.ParamType

_DURATION = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
#: Written as a duration or setting value, clears a queue setting (back to the default).
CLEAR_WORDS = frozenset({"none", "null", "default"})


class Cleared:
    """The value of a queue setting option given as ``none``: remove the setting."""

    def __repr__(self) -> str:
        return "none"


CLEAR = Cleared()


class Duration(ParamTypeBase):
    """``30``, ``30s``, ``250ms``, ``5m``, ``2h``, ``1d`` (a bare number is seconds)."""

    name = "duration"

    def __init__(self, *, allow_zero: bool = True, clearable: bool = False) -> None:
        self.allow_zero = allow_zero
        self.clearable = clearable

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION|none" if self.clearable else "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta | Cleared:
        if isinstance(value, timedelta | Cleared):
            return value
        text = str(value).strip().lower()
        if self.clearable and text in CLEAR_WORDS:
            return CLEAR
        match = _DURATION.fullmatch(text)
        if match is None:
            self.fail(f"{value!r} is not a duration (examples: 30, 30s, 250ms, 5m, 2h, 1d)", param, ctx)
        number = float(match[1])
        if number < 0:
            self.fail(f"{value!r} is negative; a duration must be 0 or more", param, ctx)
        if number == 0 and not self.allow_zero:
            self.fail(f"{value!r} must be more than 0", param, ctx)
        try:
            return timedelta(seconds=number * _UNIT_S[match[2]])
        except OverflowError:
            self.fail(f"{value!r} is too long", param, ctx)


class PriorityType(ParamTypeBase):
    """0..10 or low, normal, high, critical (higher runs first)."""

    name = "priority"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "0-10|low|normal|high|critical"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip().lower()
            if text.upper() in Priority.__members__:
                return int(Priority[text.upper()])
            try:
                number = int(text)
            except ValueError:
                self.fail(f"{value!r} is not 0..10 or one of low, normal, high, critical", param, ctx)
        if not 0 <= number <= 10:
            self.fail(f"{value!r} is not 0..10 or one of low, normal, high, critical", param, ctx)
        return number


class Timestamp(ParamTypeBase):
    """ISO-8601 with a time zone: ``2030-01-01T09:00:00Z``, ``2030-01-01 09:00+02:00``."""

    name = "timestamp"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        else:
            try:
                parsed = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an ISO-8601 timestamp (e.g. 2030-01-01T09:00:00Z)", param, ctx)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            self.fail(f"{value!r} has no time zone; add Z or an offset like +02:00", param, ctx)
        return parsed


class Clearable(ParamTypeBase):
    """An integer setting, or ``none`` to remove it."""

    def __init__(self, low: int, high: int | None = None) -> None:
        self.inner = click.IntRange(low, high)
        self.name = "integer|none"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | Cleared:
        if isinstance(value, Cleared) or str(value).strip().lower() in CLEAR_WORDS:
            return CLEAR
        result: int = self.inner.convert(value, param, ctx)
        return result


class JobId(ParamTypeBase):
    """A job id: a whole number from 1 (``jobs show abc`` says so, not "not a valid integer range")."""

    name = "job id"
    MAX = 2**63 - 1

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"job id must be a number, not {value!r}", param, ctx)
        if number < 1:
            self.fail(f"job id must be a positive number, not {value!r}", param, ctx)
        if number > self.MAX:
            self.fail(f"job id is too large: {value!r}", param, ctx)
        return number


DURATION = Duration()
POSITIVE_DURATION = Duration(allow_zero=False)
PRIORITY = PriorityType()
TIMESTAMP = Timestamp()
JOB_ID = JobId()
STATES = [state.value for state in JobState]

# -- shared options ----------------------------------------------------------------------------


def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """click.option whose environment variable (JOBQUEUE_<COMMAND>_<OPTION>) shows in --help."""
    attrs.setdefault("show_envvar", True)
    decorator: Callable[[F], F] = click.option(*decls, **attrs)
    return decorator


def json_option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """``--json``: one machine-readable JSON document on stdout instead of tables."""
    return option(*(decls or ("--json", "as_json")), is_flag=True, help="Print one JSON document.", **attrs)


def limit_option(default: int = 50) -> Callable[[F], F]:
    return option(
        "--limit",
        type=click.IntRange(1, 10_000),
        default=default,
        show_default=True,
        help="Rows per page.",
    )


def before_option() -> Callable[[F], F]:
    return option(
        "--before-id",
        type=JOB_ID,
        metavar="ID",
        help="Page: rows with smaller ids (the next page starts after the last id shown).",
    )


#: The filters a listing or bulk verb can take: each one's flags and click attributes.
_FILTERS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "state": (("--state", "states"), {"multiple": True, "type": click.Choice(STATES)}),
    "queue": (("--queue", "-q"), {"default": None}),
    "type": (("--type", "type_"), {"default": None}),
    "tenant": (("--tenant",), {"default": None}),
    "reason": (("--reason",), {"default": None}),
    "error_class": (("--error-class",), {"default": None}),
}


def filter_options(**helps: str) -> Callable[[F], F]:
    """The filter options named in ``helps`` (state, queue, type, tenant, reason, error_class),
    in that order, each with the help text given: ``filter_options(queue="Only this queue.")``.

    Every verb spells a filter the same way (``--type`` arrives as ``type_``, ``--state`` as
    ``states``); only what the help says differs.
    """

    def decorate(f: F) -> F:
        for key, text in reversed(helps.items()):
            decls, attrs = _FILTERS[key]
            f = option(*decls, help=text, **attrs)(f)
        return f

    return decorate


# -- data documents (payload, JSON options): bad data is exit 65, nothing written -------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def json_object(text: str, field: str, source: str = "") -> dict[str, Any]:
    """A JSON object from text; anything else (NaN, Infinity, arrays, bad JSON) is InvalidInput."""
    where = f" ({source})" if source else ""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{field}: not valid JSON{where}: {exc.msg} at line {exc.lineno} column {exc.colno}", field=field
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{field}: not valid JSON{where}: {exc}", field=field) from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be a JSON object, not {_json_kind(value)}{where}", field=field)
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def read_payload(spec: str | None) -> dict[str, Any]:
    """PAYLOAD as given: JSON object text, ``-`` for stdin, ``@path`` for a file; none is ``{}``."""
    if spec is None:
        return {}
    if spec == "-":
        text = sys.stdin.read()
        if not text.strip():
            raise InvalidInput("payload: stdin is empty (expected a JSON object)", field="payload")
        return json_object(text, "payload", "stdin")
    if spec.startswith("@"):
        path = spec[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise InvalidInput(f"payload: file {path!r} does not exist", field="payload") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidInput(f"payload: cannot read file {path!r}: {reason}", field="payload") from None
        if not text.strip():
            raise InvalidInput(f"payload: file {path!r} is empty (expected a JSON object)", field="payload")
        return json_object(text, "payload", path)
    return json_object(spec, "payload")


def optional_object(text: str | None, field: str) -> dict[str, Any] | None:
    return None if text is None else json_object(text, field)
