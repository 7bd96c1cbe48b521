"""Expand a Grafana PostgreSQL query the way Grafana does before it reaches the database.

Grafana turns a panel's ``rawSql`` into the SQL it runs in three steps, and this module repeats
each of them so tests can run every dashboard and alert query against a real database:

1. the browser replaces dashboard variables (``$area``, ``${sensor}``, ``[[x]]``, ``${x:csv}``)
   and the built-ins ``$__interval``, ``$__interval_ms``, ``$__from``, ``$__to``.
   Values are formatted like the SQL data sources' ``interpolateVariable``: a single-valued
   variable has its single quotes doubled but gets no quotes of its own (the query writes
   ``'$sensor'``); a multi-value or include-All variable becomes a comma-separated list of
   quoted literals (the query writes ``IN ($area)``);
2. the backend's global substitutions (``pkg/tsdb/grafana-postgresql-datasource/sqleng``:
   ``$__interval_ms``, ``$__interval``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``);
3. the PostgreSQL macro engine (``macros.go``): ``$__time``, ``$__timeEpoch``,
   ``$__timeFilter``, ``$__timeFrom()``, ``$__timeTo()``, ``$__timeGroup`` (``time_bucket``
   with the data source's TimescaleDB option, ``floor(extract(epoch ...))`` without),
   ``$__timeGroupAlias``, ``$__unixEpochFilter``, ``$__unixEpochNanoFilter`` and friends.

The same module also repeats what Grafana's provisioning does to YAML string values
(``$VAR`` / ``${VAR}`` from the environment, ``$$`` for a literal dollar), so that
``grafana push`` sends exactly what file provisioning would load.
"""
from __future__ import annotations

import calendar
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

__all__ = [
    "MacroError",
    "TimeRange",
    "Variable",
    "expand",
    "expand_macros",
    "format_interval",
    "go_expand_env",
    "interpolate_provisioning_value",
    "interpolate_variables",
    "parse_interval",
    "quote_literal",
    "rfc3339nano",
]


class MacroError(ValueError):
    """A macro Grafana would refuse (unknown name, missing argument, bad interval)."""


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    def __post_init__(self):
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("TimeRange needs timezone-aware datetimes")

    @classmethod
    def last(cls, duration: timedelta, now: datetime | None = None) -> "TimeRange":
        now = now or datetime.now(timezone.utc)
        return cls(now - duration, now)


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's current value as the browser holds it."""

    value: str | list[str] | int | float
    multi: bool = False
    include_all: bool = False


# --- Go helpers --------------------------------------------------------------------------------

def rfc3339nano(t: datetime) -> str:
    """Go's ``t.UTC().Format(time.RFC3339Nano)``: trailing zeros of the fraction are dropped."""
    t = t.astimezone(timezone.utc)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        base += "." + f"{t.microsecond:06d}".rstrip("0")
    return base + "Z"


def _go_float_v(x: float) -> str:
    """Go's ``fmt.Sprintf("%v", x)`` for a float64 (shortest digits, %e from exponent 6 or < -4)."""
    if x == 0:
        return "0"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    d = Decimal(repr(x)).normalize()
    sign, digits, exp = d.as_tuple()
    ds = "".join(map(str, digits))
    point = len(ds) + exp  # position of the decimal point relative to the digits
    e = point - 1
    s = "-" if sign else ""
    if e < -4 or e >= 6:  # strconv 'g' with shortest precision uses eprec = 6
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{s}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{s}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return s + ds + "0" * (point - len(ds))
    return f"{s}{ds[:point]}.{ds[point:]}"


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DUR_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DATE_UNIT = re.compile(r"^(\d+)([dwMy])$")


def _go_parse_duration(s: str) -> float:
    """Go's ``time.ParseDuration`` in seconds."""
    orig = s
    neg = s.startswith("-")
    if s[:1] in "+-":
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise MacroError(f"invalid duration {orig!r}")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _GO_DUR_PART.match(s, pos)
        if not m:
            raise MacroError(f"invalid duration {orig!r}")
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return -total if neg else total


def parse_interval(s: str, now: datetime | None = None) -> float:
    """``gtime.ParseInterval`` in seconds: Go durations plus ``d``, ``w``, ``M``, ``y``."""
    if s == "":
        raise MacroError("empty interval")
    m = _DATE_UNIT.match(s)
    if not m:
        return _go_parse_duration(s)
    n, unit = int(m.group(1)), m.group(2)
    if unit == "d":
        return n * 86400.0
    if unit == "w":
        return n * 7 * 86400.0
    now = now or datetime.now(timezone.utc)
    months = n if unit == "M" else 12 * n
    y, mo = divmod(now.month - 1 + months, 12)
    y += now.year
    day = min(now.day, calendar.monthrange(y, mo + 1)[1])
    return (now.replace(year=y, month=mo + 1, day=day) - now).total_seconds()


def format_interval(seconds: float) -> str:
    """``gtime.FormatInterval`` (and the browser's ``secondsToHms``): the largest whole unit."""
    units = ((365 * 86400, "y"), (86400, "d"), (3600, "h"), (60, "m"), (1, "s"), (0.001, "ms"))
    for size, name in units:
        if seconds >= size:
            return f"{int(seconds // size) if size >= 1 else int(round(seconds * 1000))}{name}"
    return "1ms"


# --- step 1: dashboard variables (browser) ------------------------------------------------------

def quote_literal(value: Any) -> str:
    """The PostgreSQL query model's ``quoteLiteral``."""
    return "'" + str(value).replace("'", "''") + "'"


def _format_default(value: Any, var: Variable) -> str:
    """SqlDatasource.interpolateVariable (Grafana's SQL data sources, postgres included)."""
    if isinstance(value, str):
        if var.multi or var.include_all:
            return quote_literal(value)
        return value.replace("'", "''")
    if isinstance(value, (int, float)):
        return str(value)
    return ",".join(quote_literal(v) for v in value)


def _format_named(value: Any, fmt: str) -> str:
    vals = value if isinstance(value, list) else [value]
    if fmt == "raw":
        return ",".join(str(v) for v in vals) if isinstance(value, list) else str(value)
    if fmt == "csv":
        return ",".join(str(v) for v in vals)
    if fmt == "sqlstring":
        return ",".join(quote_literal(v) for v in vals)
    if fmt == "singlequote":
        return ",".join("'" + str(v).replace("'", "\\'") + "'" for v in vals)
    if fmt == "doublequote":
        return ",".join('"' + str(v).replace('"', '\\"') + '"' for v in vals)
    raise MacroError(f"variable format {fmt!r} is not supported by this expander")


# TemplateSrv's variable regex: $name | [[name(:fmt)?]] | ${name(.path)?(:fmt)?}
_VAR_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def interpolate_variables(sql: str, variables: Mapping[str, Variable], time_range: TimeRange,
                          interval_s: float) -> str:
    """Replace dashboard variables and the browser's built-ins; unknown names stay as written."""
    builtins: dict[str, str] = {
        "__interval": format_interval(interval_s),
        "__interval_ms": str(int(round(interval_s * 1000))),
        "__from": str(int(time_range.start.timestamp() * 1000)),
        "__to": str(int(time_range.end.timestamp() * 1000)),
        "__range_s": str(int((time_range.end - time_range.start).total_seconds())),
    }

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in builtins:
            return builtins[name]
        var = variables.get(name)
        if var is None:
            return m.group(0)
        if fmt:
            return _format_named(var.value, fmt)
        return _format_default(var.value, var)

    return _VAR_RE.sub(repl, sql)


# --- step 2 and 3: backend ----------------------------------------------------------------------

def _global_substitutions(sql: str, time_range: TimeRange, interval_s: float) -> str:
    """sqleng.Interpolate."""
    sql = sql.replace("$__interval_ms", str(int(interval_s * 1000)))
    sql = sql.replace("$__interval", format_interval(interval_s))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_range.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_range.end.timestamp())))
    return sql


_MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def _evaluate(name: str, args: list[str], tr: TimeRange, timescaledb: bool) -> str:
    def need_col():
        if not args or args == [""]:
            raise MacroError(f"missing time column argument for macro {name}")

    frm, to = rfc3339nano(tr.start), rfc3339nano(tr.end)
    if name == "__time":
        need_col()
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        need_col()
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        need_col()
        return f"{args[0]} BETWEEN '{frm}' AND '{to}'"
    if name == "__timeFrom":
        return f"'{frm}'"
    if name == "__timeTo":
        return f"'{to}'"
    if name in ("__timeGroup", "__unixEpochGroup"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        try:
            secs = parse_interval(args[1].strip("'"))
        except MacroError:
            raise MacroError(f"error parsing interval {args[1]}") from None
        # a third argument (fill mode) only changes how Grafana post-processes the frame
        if name == "__unixEpochGroup":
            return f"floor(({args[0]})/{_go_float_v(secs)})*{_go_float_v(secs)}"
        if timescaledb:
            return f"time_bucket('{secs:.3f}s',{args[0]})"
        return f"floor(extract(epoch from {args[0]})/{_go_float_v(secs)})*{_go_float_v(secs)}"
    if name in ("__timeGroupAlias", "__unixEpochGroupAlias"):
        return _evaluate(name[: -len("Alias")], args, tr, timescaledb) + ' AS "time"'
    if name == "__unixEpochFilter":
        need_col()
        return (f"{args[0]} >= {int(tr.start.timestamp())} AND "
                f"{args[0]} <= {int(tr.end.timestamp())}")
    if name == "__unixEpochNanoFilter":
        need_col()
        return f"{args[0]} >= {_ns(tr.start)} AND {args[0]} <= {_ns(tr.end)}"
    if name == "__unixEpochNanoFrom":
        return str(_ns(tr.start))
    if name == "__unixEpochNanoTo":
        return str(_ns(tr.end))
    raise MacroError(f"unknown macro {name!r}")


def _ns(t: datetime) -> int:
    delta = t.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def expand_macros(sql: str, time_range: TimeRange, *, interval_s: float = 60.0,
                  timescaledb: bool = True) -> str:
    """Backend steps 2 and 3 (what Grafana does to SQL received from the browser or a rule)."""
    sql = _global_substitutions(sql, time_range, interval_s)
    original = sql

    def repl(m: re.Match) -> str:
        name = m.group(1)
        # pre-5.3 compatibility: "$__timeGroup(...)," means the alias form (macros.go looks at
        # the character after the first occurrence of the same macro text)
        if name == "__timeGroup":
            idx = original.find(m.group(0))
            if idx >= 0:
                idx += len(m.group(0))
                if len(original) > idx and original[idx] == ",":
                    name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m.group(2).split(",")]
        return _evaluate(name, args, time_range, timescaledb)

    return _MACRO_RE.sub(repl, sql)


def expand(sql: str, time_range: TimeRange, *, variables: Mapping[str, Variable] | None = None,
           interval_s: float = 60.0, timescaledb: bool = True) -> str:
    """All three steps: the SQL Grafana would send to PostgreSQL for this panel query."""
    sql = interpolate_variables(sql, variables or {}, time_range, interval_s)
    return expand_macros(sql, time_range, interval_s=interval_s, timescaledb=timescaledb)


# --- provisioning file interpolation --------------------------------------------------------------

_SPECIAL = set("*#$@!?-0123456789")


def _shell_name(s: str) -> tuple[str, int]:
    """Go's os.getShellName."""
    if s[0] == "{":
        if len(s) > 2 and s[1] in _SPECIAL and s[2] == "}":
            return s[1:2], 3
        for i in range(1, len(s)):
            if s[i] == "}":
                if i == 1:
                    return "", 2
                return s[1:i], i + 1
        return "", 1
    if s[0] in _SPECIAL:
        return s[0:1], 1
    i = 0
    while i < len(s) and (s[i] == "_" or s[i].isascii() and s[i].isalnum()):
        i += 1
    return s[:i], i


def go_expand_env(s: str, env: Mapping[str, str]) -> str:
    """Go's ``os.ExpandEnv`` with ``env`` as the environment."""
    out: list[str] = []
    i = 0
    j = 0
    while j < len(s):
        if s[j] == "$" and j + 1 < len(s):
            out.append(s[i:j])
            name, w = _shell_name(s[j + 1:])
            if name == "" and w > 0:
                pass  # invalid syntax: eaten
            elif name == "":
                out.append(s[j])
            else:
                out.append(env.get(name, ""))
            j += w
            i = j + 1
        j += 1
    out.append(s[i:])
    return "".join(out)


def interpolate_provisioning_value(s: str, env: Mapping[str, str]) -> str:
    """What Grafana's provisioning does to a YAML string value (``values.interpolateValue``)."""
    return "$".join(go_expand_env(part, env) for part in s.split("$$"))
