"""The macro expander against the cases of Grafana's own macros_test.go and sqleng behaviour."""
from datetime import datetime, timedelta, timezone

import pytest

from plantwatch.connectors.grafana_macros import (
    MacroError, TimeRange, Variable, expand, expand_macros, format_interval, go_expand_env,
    interpolate_provisioning_value, interpolate_variables, parse_interval, rfc3339nano)

FROM = datetime(2018, 4, 12, 18, 0, 0, tzinfo=timezone.utc)
TR = TimeRange(FROM, FROM + timedelta(minutes=5))


@pytest.mark.parametrize("sql,ts,want", [
    ("select $__time(time_column)", False, 'select time_column AS "time"'),
    ("select min($__time(time_column))", False, 'select min(time_column AS "time")'),
    ("WHERE $__timeFilter(time_column)", False,
     "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"),
    ("select $__timeFrom()", False, "select '2018-04-12T18:00:00Z'"),
    ("select $__timeTo()", False, "select '2018-04-12T18:05:00Z'"),
    ("SELECT $__timeGroup(time_column,'5m'), value", False,
     'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'),
    ("SELECT $__timeGroup(time_column,'5m') as time, value", False,
     "SELECT floor(extract(epoch from time_column)/300)*300 as time, value"),
    ("SELECT $__timeGroup(time_column,'5m')", False, "SELECT floor(extract(epoch from time_column)/300)*300"),
    ("SELECT $__timeGroupAlias(time_column,'5m')", False,
     'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"'),
    ("$__timeGroup(time_column , '5m')", False, "floor(extract(epoch from time_column)/300)*300"),
    ("GROUP BY $__timeGroup(time_column,'5m')", True, "GROUP BY time_bucket('300.000s',time_column)"),
    ("GROUP BY $__timeGroup(time_column , '5m')", True, "GROUP BY time_bucket('300.000s',time_column)"),
    ("GROUP BY $__timeGroup(time_column , '12d')", True, "GROUP BY time_bucket('1036800.000s',time_column)"),
    ("GROUP BY $__timeGroup(time_column , '20ms')", True, "GROUP BY time_bucket('0.020s',time_column)"),
    ("GROUP BY $__timeGroup(c, '12d')", False, "GROUP BY floor(extract(epoch from c)/1.0368e+06)*1.0368e+06"),
    ("select $__unixEpochFilter(time)", False,
     f"select time >= {int(FROM.timestamp())} AND time <= {int(FROM.timestamp()) + 300}"),
    ("select $__unixEpochNanoFrom()", False, f"select {int(FROM.timestamp()) * 10**9}"),
    ("SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')", False,
     "SELECT floor((time_column+time_adjustment)/300)*300"),
    ("SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')", False,
     'SELECT floor((time_column+time_adjustment)/300)*300 AS "time"'),
])
def test_macros_as_grafana_source(sql, ts, want):
    assert expand_macros(sql, TR, timescaledb=ts) == want


def test_fractional_seconds_and_old_dates():
    tr = TimeRange(datetime(1960, 2, 1, 7, 0, 0, 500000, tzinfo=timezone.utc),
                   datetime(1980, 2, 3, 8, 0, 0, 500000, tzinfo=timezone.utc))
    assert rfc3339nano(tr.start) == "1960-02-01T07:00:00.5Z"
    assert expand_macros("WHERE $__timeFilter(t)", tr) == \
        "WHERE t BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'"


def test_interval_substitutions_before_macros():
    # sqleng replaces $__interval_ms before $__interval, then the macro parses the interval
    assert expand_macros("$__timeGroup(t, $__interval) -- $__interval_ms", TR, interval_s=60) == \
        "time_bucket('60.000s',t) -- 60000"
    assert format_interval(30) == "30s" and format_interval(90) == "1m" and format_interval(0.5) == "500ms"
    assert parse_interval("1h30m") == 5400 and parse_interval("2w") == 14 * 86400


def test_unknown_macro_and_missing_args_are_errors():
    with pytest.raises(MacroError):
        expand_macros("select $__nope(x)", TR)
    with pytest.raises(MacroError):
        expand_macros("select $__timeGroup(x)", TR)


def test_variables_quoted_like_grafana_sql_datasources():
    v = {"sensor": Variable("x'; DELETE FROM readings; --"),
         "area": Variable(["a1", "o'b"], multi=True, include_all=True),
         "one": Variable("tank", include_all=True),
         "url": Variable("http://console:8080")}
    got = interpolate_variables("'$sensor' IN ($area) [[one]] ${url:raw}/alarms ${area:csv} $area_id",
                                v, TR, 60)
    assert got == "'x''; DELETE FROM readings; --' IN ('a1','o''b') 'tank' http://console:8080/alarms a1,o'b $area_id"


def test_expand_all_steps():
    v = {"sensor": Variable("PT-101")}
    got = expand("SELECT $__timeGroupAlias(time, $__interval), avg(value) FROM r WHERE tag = '${sensor}' "
                 "AND $__timeFilter(time) GROUP BY 1", TR, variables=v, interval_s=300)
    assert got == ("SELECT time_bucket('300.000s',time) AS \"time\", avg(value) FROM r WHERE tag = 'PT-101' "
                   "AND time BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z' GROUP BY 1")


def test_provisioning_interpolation_like_grafana_values_package():
    env = {"PW": "s3cret", "HOST": "db"}
    assert interpolate_provisioning_value("$HOST:5432", env) == "db:5432"
    assert interpolate_provisioning_value("${PW}", env) == "s3cret"
    assert interpolate_provisioning_value("$$__timeFilter(time)", env) == "$__timeFilter(time)"
    # a single dollar is expanded (to nothing): the reason rule models in rules.yaml avoid "$"
    assert interpolate_provisioning_value("$__timeFilter(time)", env) == "(time)"
    assert go_expand_env("cost $5 and ${} and $", env) == "cost  and  and $"
