"""Static contracts of what goes to Grafana and of the site stack: provisioning files carry the
fields Grafana requires, dashboards refer only to things that exist, and deploy/site/compose.yaml
mounts the very files these tests check, with consistent names, roles, ports and paths."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from plantwatch.connectors import migrations
from plantwatch.connectors.grafana import (DEFAULT_DIR, PG_TYPES, PRIORITY_COLOURS, duration_seconds,
                                           env_references, iter_panels, iter_sql_queries, load_dashboards,
                                           load_rule_groups)

REPO = DEFAULT_DIR.parent
PROV = DEFAULT_DIR / "provisioning"
SITE = REPO / "deploy" / "site"
UID_RE = re.compile(r"^[a-zA-Z0-9\-_]{1,40}$")
DUR_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
READER = "plantwatch_reader"
# metric names agreed with the daemon (report them back if they change)
METRICS = {"plantwatch_readings_received_total", "plantwatch_readings_stored_total",
           "plantwatch_readings_rejected_total", "plantwatch_ingest_lag_seconds",
           "plantwatch_sequence_gaps_total", "plantwatch_write_seconds_bucket"}


def _yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


DATASOURCES = _yaml(PROV / "datasources" / "plantwatch.yaml")
PROVIDERS = _yaml(PROV / "dashboards" / "plantwatch.yaml")
RULES = _yaml(PROV / "alerting" / "rules.yaml")
CONTACTS = _yaml(PROV / "alerting" / "contact-points.yaml")
POLICIES = _yaml(PROV / "alerting" / "policies.yaml")
DASHBOARDS = load_dashboards()
COMPOSE = _yaml(SITE / "compose.yaml")
DS_UIDS = {d["uid"]: d for d in DATASOURCES["datasources"]}


# --- provisioning files ------------------------------------------------------------------------

def test_datasources_file():
    assert DATASOURCES["apiVersion"] == 1
    for ds in DATASOURCES["datasources"]:
        for k in ("name", "type", "uid", "access", "url"):
            assert ds.get(k), f"data source {ds.get('name')}: {k} is required"
        assert UID_RE.match(ds["uid"])
    pg = DS_UIDS["plantwatch-pg"]
    assert pg["type"] in PG_TYPES
    assert pg["user"] == READER
    assert pg["jsonData"]["timescaledb"] is True
    assert pg["jsonData"]["database"] and pg["jsonData"]["sslmode"]
    assert env_references(pg["secureJsonData"]["password"]) == {"PLANTWATCH_READER_PASSWORD"}
    assert "password" not in pg and "password" not in pg["jsonData"]  # only in secureJsonData
    assert DS_UIDS["plantwatch-prom"]["type"] == "prometheus"


def test_dashboard_provider_file():
    assert PROVIDERS["apiVersion"] == 1
    (p,) = PROVIDERS["providers"]
    assert p["name"] and p["type"] == "file" and p["options"]["path"].startswith("/")
    assert p["allowUiUpdates"] is False


def test_alert_rules_file():
    assert RULES["apiVersion"] == 1
    text = (PROV / "alerting" / "rules.yaml").read_text()
    dollars = [v for v in _all_strings(RULES) if "$" in v]
    assert not dollars, f"Grafana would expand $... in these values: {dollars}"
    assert "keep_firing_for" not in text  # the file format spells it keepFiringFor
    uids, titles = set(), set()
    for g in RULES["groups"]:
        assert g["orgId"] == 1 and g["name"] and g["folder"]
        assert duration_seconds(g["interval"]) >= 10
        for r in g["rules"]:
            assert UID_RE.match(r["uid"]) and r["uid"] not in uids
            assert r["title"] not in titles
            uids.add(r["uid"])
            titles.add(r["title"])
            refs = [q["refId"] for q in r["data"]]
            assert r["condition"] in refs and len(set(refs)) == len(refs)
            for q in r["data"]:
                assert set(q) >= {"refId", "relativeTimeRange", "datasourceUid", "model"}
                assert q["model"]["refId"] == q["refId"]
                if q["datasourceUid"] == "__expr__":
                    m = q["model"]
                    assert m["type"] in ("threshold", "reduce", "math", "classic_conditions")
                    assert m["expression"] in refs
                    ev = m["conditions"][0]["evaluator"]
                    assert ev["type"] in ("gt", "lt", "within_range", "outside_range") and ev["params"]
                else:
                    assert q["datasourceUid"] in DS_UIDS
                    assert q["model"]["datasource"]["uid"] == q["datasourceUid"]
                    assert q["model"]["format"] == "table" and q["model"]["rawSql"].strip()
            assert r["noDataState"] in ("Alerting", "NoData", "OK", "KeepLast")
            assert r["execErrState"] in ("Alerting", "Error", "OK", "KeepLast")
            assert DUR_RE.match(r["for"]) and DUR_RE.match(r["keepFiringFor"])
            assert {"summary", "description", "runbook_url"} <= set(r["annotations"])
            assert {"severity", "team", "component"} <= set(r["labels"])
    assert len(uids) == 4


def test_contact_points_and_policies():
    assert CONTACTS["apiVersion"] == 1 and POLICIES["apiVersion"] == 1
    names = set()
    for cp in CONTACTS["contactPoints"]:
        names.add(cp["name"])
        for rcv in cp["receivers"]:
            assert UID_RE.match(rcv["uid"]) and rcv["type"] and rcv["settings"]

    def walk(route):
        assert route["receiver"] in names
        for m in route.get("object_matchers") or []:
            assert len(m) == 3 and m[1] in ("=", "!=", "=~", "!~")
        for child in route.get("routes") or []:
            walk(child)

    for p in POLICIES["policies"]:
        walk(p)
    teams = {r["labels"]["team"] for g in RULES["groups"] for r in g["rules"]}
    routed = {m[2] for p in POLICIES["policies"] for r in p["routes"] for m in r["object_matchers"]}
    assert teams <= routed


# --- dashboards --------------------------------------------------------------------------------

BUILTIN_VARS = {"__interval", "__interval_ms", "__from", "__to", "__timeFilter", "__timeFrom", "__timeTo",
                "__timeGroup", "__timeGroupAlias", "__rate_interval", "__range", "__value", "__data",
                "__url_time_range", "__unixEpochFilter"}


def _all_strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for v in obj:
            yield from _all_strings(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _all_strings(v)


@pytest.mark.parametrize("path,d", DASHBOARDS, ids=[p.name for p, _ in DASHBOARDS])
def test_dashboard_json(path, d):
    assert UID_RE.match(d["uid"]) and d["title"] and d["schemaVersion"] >= 36
    assert "id" not in d or d["id"] is None
    names = {v["name"] for v in d["templating"]["list"]}
    consts = [v for v in d["templating"]["list"] if v["name"] == "console_url"]
    assert consts and consts[0]["type"] == "constant" and consts[0]["query"].startswith("http")
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["datasource"]["uid"] in DS_UIDS
        for t in p["targets"]:
            assert t["datasource"]["uid"] in DS_UIDS and t["refId"]
            if t["datasource"]["uid"] == "plantwatch-prom":
                used = set(re.findall(r"\b(plantwatch_[a-z_]+)", t["expr"]))
                assert used and used <= METRICS, f"{p['title']}: unknown metrics {used - METRICS}"
            else:
                assert t["format"] in ("time_series", "table") and t["rawQuery"] is True
    for s in _all_strings(d):
        for a, b in re.findall(r"\$\{(\w+)[^}]*\}|\$(\w+)", s):
            name = a or b
            assert name in names or name in BUILTIN_VARS, f"{path.name}: undefined variable ${name} in {s[:80]!r}"
        if "/alarms/" in s or "/incidents" in s:
            assert s.startswith("${console_url}/"), f"{path.name}: console link without ${{console_url}}: {s}"
    for a in d["annotations"]["list"]:
        if a.get("target"):
            assert a["datasource"]["uid"] in DS_UIDS and a["filter"]["ids"] and set(a["filter"]["ids"]) <= set(ids)


def test_overview_links_alarms_to_the_console():
    d = next(d for p, d in DASHBOARDS if d["uid"] == "plantwatch-overview")
    urls = list(_all_strings(d))
    assert "${console_url}/alarms/${__value.raw}" in urls


def test_every_sql_query_is_found_and_uses_the_rollup_for_long_ranges():
    queries = list(iter_sql_queries(DASHBOARDS, load_rule_groups()))
    assert len(queries) >= 30
    for q in queries:
        raw = re.search(r"\bFROM\s+readings\s", q.sql + " ")
        if raw:  # the one panel reading raw readings guards its range (tested on the database too)
            assert "<= interval '6 hours'" in q.sql, q.where


# --- the site stack ----------------------------------------------------------------------------

def _volumes(service):
    out = []
    for v in COMPOSE["services"][service].get("volumes") or []:
        src, dst = v.split(":")[:2]
        out.append((src, dst))
    return out


def test_compose_references_existing_files():
    for name, svc in COMPOSE["services"].items():
        for src, _dst in _volumes(name):
            if src.startswith("."):
                assert (SITE / src).exists(), f"{name}: {src} does not exist"
            else:
                assert src in COMPOSE["volumes"], f"{name}: undeclared volume {src}"
        build = svc.get("build")
        if build:
            assert (SITE / build["context"] / build["dockerfile"]).is_file()


def test_grafana_mounts_the_tested_files():
    mounts = {dst: (SITE / src).resolve() for src, dst in _volumes("grafana") if src.startswith(".")}
    assert mounts["/etc/grafana/provisioning/datasources"] == (PROV / "datasources").resolve()
    assert mounts["/etc/grafana/provisioning/dashboards"] == (PROV / "dashboards").resolve()
    assert mounts["/etc/grafana/provisioning/alerting"] == (PROV / "alerting").resolve()
    (provider,) = PROVIDERS["providers"]
    # the dashboards: a volume the `dashboards` service fills by rendering the tested files (with the
    # site's console URL and time zone: plantwatch grafana render)
    volumes = {dst: src for src, dst in _volumes("grafana") if not src.startswith(".")}
    rendered = volumes[provider["options"]["path"]]
    render = COMPOSE["services"]["dashboards"]
    out = render["command"][render["command"].index("--out") + 1]
    assert (rendered, out) in _volumes("dashboards") and render["command"][:3] == ["plantwatch", "grafana", "render"]
    assert render["image"] == COMPOSE["services"]["plantwatch"]["image"]
    assert "COPY dashboards ./dashboards" in (SITE / "Dockerfile").read_text()


def test_names_roles_ports_are_consistent():
    svc = COMPOSE["services"]
    assert svc["timescaledb"]["image"] == "timescale/timescaledb:2.19.3-pg15"
    genv = svc["grafana"]["environment"]
    # every $VAR the provisioning files read is set for Grafana
    needed = env_references(DATASOURCES) | env_references(CONTACTS)
    assert needed <= set(genv), needed - set(genv)
    db_host, db_port = genv["PLANTWATCH_DB_ADDR"].split(":")
    assert db_host == "timescaledb" and db_port == "5432"
    assert genv["PLANTWATCH_DB_NAME"] == svc["timescaledb"]["environment"]["POSTGRES_DB"]
    assert genv["PLANTWATCH_PROMETHEUS_URL"] == "http://prometheus:9090" and "9090" in svc["prometheus"]["expose"]
    # one role name everywhere: data source, migration, database init script
    assert DS_UIDS["plantwatch-pg"]["user"] == READER
    assert f"CREATE ROLE {READER} LOGIN" in dict((n, s) for _, n, s in migrations.available())["grafana_views"]
    assert f"CREATE ROLE {READER} LOGIN" in (SITE / "timescaledb" / "10-plantwatch-reader.sh").read_text()
    assert genv["PLANTWATCH_READER_PASSWORD"] == svc["timescaledb"]["environment"]["PLANTWATCH_READER_PASSWORD"]
    # plantwatch: its config, its metrics port, the scrape target
    from plantwatch.daemon.config.model import load_config

    cfg_src = next(src for src, dst in _volumes("plantwatch") if dst == "/etc/plantwatch/site.yaml")
    cfg = load_config(SITE / cfg_src, check_files=False)  # its certificates exist in the stack only
    assert svc["plantwatch"]["command"] == ["plantwatch", "run", "--config", "/etc/plantwatch/site.yaml"]
    # /metrics: on the stack's network only because Prometheus runs in its own container, and
    # then over HTTPS with basic authentication, never published on the host
    assert cfg.metrics.port == 9108 and cfg.metrics.host == "0.0.0.0" and "9108" in svc["plantwatch"]["expose"]
    assert cfg.metrics.tls is not None and cfg.metrics.basic_auth is not None
    # published: the operator API and console only (HTTPS, api: in site.yaml), never /metrics
    assert svc["plantwatch"]["ports"] == [f"{cfg.api.port}:{cfg.api.port}"] and cfg.api.tls is not None
    assert "ports" not in svc["prometheus"]
    prom = _yaml(SITE / "prometheus" / "prometheus.yml")
    (job,) = [job for job in prom["scrape_configs"] if job["job_name"] == "plantwatch"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"plantwatch:{cfg.metrics.port}"]
    assert job["scheme"] == "https" and job["basic_auth"]["username"] == cfg.metrics.basic_auth.username
    # each side finds the same files where the stack mounts the tls volume
    mounted = {svc_name: {dst: src for src, dst in _volumes(svc_name)} for svc_name in svc}
    assert mounted["plantwatch"]["/etc/plantwatch/tls"] == "tls" and mounted["prometheus"]["/etc/prometheus/tls"] == "tls"
    assert Path(cfg.metrics.basic_auth.password_file).name == Path(job["basic_auth"]["password_file"]).name
    assert Path(job["tls_config"]["ca_file"]).name == Path(cfg.mqtt.tls.ca_file).name == "ca.crt"
    assert cfg.database.dsn.endswith(f"@timescaledb:5432/{genv['PLANTWATCH_DB_NAME']}")
    assert ":" not in cfg.database.dsn.split("@")[0].split("//")[1]  # no password in the config
    assert cfg.database.tls.mode == "verify-full"
    assert "ssl=on" in svc["timescaledb"]["command"]
    # broker: the daemon on the daemon listener (TLS, password from the environment), collectors on
    # the published edge listener (TLS, client certificates, client id = user name)
    assert cfg.mqtt.host == "mosquitto" and cfg.mqtt.password is None and cfg.mqtt.tls is not None
    assert svc["plantwatch"]["environment"]["PLANTWATCH_MQTT_PASSWORD"] == "${MQTT_PLANTWATCH_PASSWORD:?set in .env}"
    conf = (SITE / "mosquitto" / "mosquitto.conf").read_text()
    listeners = {int(p): body for p, body in re.findall(r"^listener (\d+)\n(.*?)(?=^listener |^# --- both|\Z)", conf,
                                                        re.M | re.S)}
    assert set(listeners) == {8883, cfg.mqtt.port} and svc["mosquitto"]["ports"] == ["8883:8883"]
    assert re.search(r"^per_listener_settings true$", conf, re.M) and not re.search(r"^listener 1883", conf, re.M)
    for port, body in listeners.items():
        for key in ("cafile", "certfile", "keyfile", "acl_file"):
            assert re.search(rf"^{key} /", body, re.M), f"listener {port}: no {key}"
        assert re.search(r"^allow_anonymous false$", body, re.M), port
    edge = listeners[8883]
    for key in ("require_certificate", "use_identity_as_username", "use_username_as_clientid"):
        assert re.search(rf"^{key} true$", edge, re.M), key
    assert re.search(r"^password_file ", listeners[cfg.mqtt.port], re.M)
    assert re.search(r"^persistence true$", conf, re.M)
    inflight = int(re.search(r"^max_inflight_messages (\d+)$", conf, re.M).group(1))
    assert inflight >= cfg.mqtt.receive_window
    assert int(re.search(r"^max_queued_messages (\d+)$", conf, re.M).group(1)) > 1000
    mounted_broker = {dst for _, dst in _volumes("mosquitto")}
    for key in ("password_file", "acl_file", "cafile", "certfile", "keyfile"):
        for path in re.findall(rf"^{key} (\S+)$", conf, re.M):
            assert any(path.startswith(m) for m in mounted_broker), f"{key} {path} is not mounted"
    acl = (SITE / "mosquitto" / "acl").read_text()
    assert f"user {cfg.mqtt.username}\n" in acl
    prefix = cfg.mqtt.topic_prefix
    assert f"topic read {prefix}/+/+/readings" in acl and f"pattern write {prefix}/+/%u/readings" in acl
    passwd_cmd = svc["mosquitto-passwd"]["command"][0]
    # the daemon listener's password file: the daemon's user and nobody else
    assert re.findall(r"mosquitto_passwd -b /mosquitto/auth/passwd (\S+) ", passwd_cmd) == [cfg.mqtt.username]


def test_env_example_defines_every_required_variable():
    text = (SITE / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = {line.split("=", 1)[0] for line in (SITE / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required <= example, required - example
    cfg = yaml.safe_load((SITE / "plantwatch" / "site.yaml").read_text())
    assert "password" not in cfg["mqtt"]  # from the environment (compose: MQTT_PLANTWATCH_PASSWORD)


# --- links, colours, units ---------------------------------------------------------------------

def test_console_url_default_is_the_apis_own_address():
    """One source of truth: the dashboards' default console_url is where the API listens by default."""
    from plantwatch.daemon.config.model import ApiConfig

    for path, d in DASHBOARDS:
        (const,) = [v for v in d["templating"]["list"] if v["name"] == "console_url"]
        assert const["query"] == ApiConfig().url, f"{path.name}: console_url {const['query']} != {ApiConfig().url}"


def _panel_colours(p) -> dict[str, set[str]]:
    """Colours a panel gives each priority: value mappings of priority names, and per-field
    colours (fixed, or the first non-transparent threshold step) of fields named by priority."""
    out: dict[str, set[str]] = {}
    fc = p.get("fieldConfig") or {}
    for props in [fc.get("defaults") or {}] + [{q["id"]: q["value"] for q in o["properties"]}
                                               for o in fc.get("overrides") or []]:
        for m in props.get("mappings") or []:
            for value, res in (m.get("options") or {}).items():
                if value in PRIORITY_COLOURS and res.get("color"):
                    out.setdefault(value, set()).add(res["color"])
    for o in fc.get("overrides") or []:
        name = o["matcher"].get("options")
        if o["matcher"]["id"] != "byName" or name not in PRIORITY_COLOURS:
            continue
        props = {q["id"]: q["value"] for q in o["properties"]}
        colour = (props.get("color") or {}).get("fixedColor")
        steps = [s["color"] for s in (props.get("thresholds") or {}).get("steps", []) if s["color"] != "transparent"]
        out.setdefault(name, set()).update([colour] if colour else steps[:1])
    return out


def test_priority_colours_are_distinct_and_the_same_on_every_dashboard():
    assert len(set(PRIORITY_COLOURS.values())) == len(PRIORITY_COLOURS) == 4
    seen = 0
    for path, d in DASHBOARDS:
        for p in iter_panels(d["panels"]):
            for prio, colours in _panel_colours(p).items():
                seen += 1
                assert colours == {PRIORITY_COLOURS[prio]}, f"{path.name}: {p['title']}: {prio} is {colours}"
    assert seen >= 12


#: what every panel shows, hence its unit: "" is the panel's default, other keys are columns
#: (overrides). Values in the sensors' own units (which differ per sensor) are "none" and the
#: unit is shown beside them (a unit column, or the series / panel name).
UNITS = {
    "alarm-health.json": {
        "Alarm activations per 10 minutes": {"": "short"},
        "Time in flood": {"": "none", "flood_pct": "percent", "per_10min": "short"},
        "Chattering alarms (3+ activations within a minute)": {"": "none"},
        "Stale alarms (active 24 h or more)": {"": "none", "age_h": "h"},
        "Top 10 bad actors": {"": "none", "pct_of_all": "percent"},
        "Alarms by state (now)": {"": "short"},
    },
    "area-sensor.json": {
        "${sensor}: value [${unit}]": {"": "none"},
        "${sensor}: range in this period (rollup)": {"": "none"},
        "${sensor}: detector events": {"": "none"},
        "Alarms in ${area}": {"": "none", "age_s": "s"},
        "Sensors in ${area}": {"": "none", "age_s": "s"},
    },
    "incidents.json": {
        "Incidents": {"": "none", "duration_s": "s"},
        "Incident timeline: alarms raised per minute, by incident": {"": "short"},
        "Operator actions on incident alarms": {"": "none"},
    },
    "pipeline-health.json": {
        "Readings per second": {"": "suffix: readings/s"},
        "Rejected readings by reason": {"": "suffix: readings/s"},
        "Ingest lag": {"": "s"},
        "Batches lost between collectors and broker": {"": "short"},
        "Database write latency": {"": "s"},
        "Readings stored per minute (database)": {"": "suffix: readings/min", "sensors_reporting": "short"},
        "Dead letters by reason": {"": "short"},
        "Collectors": {"": "none", "silent_s": "s"},
        "Latest dead letters": {"": "none"},
    },
    "plant-overview.json": {
        "Active alarms by priority": {"": "short"},
        "Active alarms by area and priority": {"": "none"},
        "Active alarms": {"": "none", "age_s": "s"},
        "Gas readings against limits": {"": "none", "pct_of_high": "percent", "age_s": "s"},
        "Pressure trends": {"": "none"},
        "Stale and faulty sensors": {"": "none", "age_s": "s"},
    },
    "robot-inspection.json": {
        "Latest robot readings on the site map": {"": "none", "x": "lengthm", "y": "lengthm"},
        "Route driven": {"": "lengthm"},
        "Robot channels against their last-hour baseline": {"": "none", "x": "lengthm", "y": "lengthm"},
        "Robot readings flagged by detectors": {"": "none", "x": "lengthm", "y": "lengthm"},
    },
}


def panel_units(p) -> dict[str, str | None]:
    fc = p.get("fieldConfig") or {}
    out = {"": (fc.get("defaults") or {}).get("unit")}
    for o in fc.get("overrides") or []:
        for q in o["properties"]:
            if q["id"] == "unit" and o["matcher"]["id"] == "byName":
                out[o["matcher"]["options"]] = q["value"]
    return out


def test_every_panel_has_the_unit_of_what_it_shows():
    assert sorted(UNITS) == sorted(p.name for p, _ in DASHBOARDS)
    for path, d in DASHBOARDS:
        panels = {p["title"]: p for p in iter_panels(d["panels"]) if p["type"] != "row"}
        assert sorted(panels) == sorted(UNITS[path.name]), path.name
        for title, p in panels.items():
            assert panel_units(p) == UNITS[path.name][title], f"{path.name}: {title}"


# --- time zone ---------------------------------------------------------------------------------

def test_dashboards_show_utc_and_say_so_like_the_console_cli_and_reports():
    """Regression: every dashboard used the browser's time zone while every other view uses UTC."""
    for path, d in DASHBOARDS:
        assert d["timezone"] == "utc", f"{path.name}: timezone {d['timezone']!r}"
        assert d["description"].endswith("Times are shown in UTC."), path.name


def test_a_site_renders_them_in_local_time_when_it_wants(tmp_path):
    from plantwatch.connectors.grafana_files import GrafanaPushError, render, with_timezone

    files = render(tmp_path, console_url="https://pw.plant.example:8110", timezone="Europe/Berlin")
    assert sorted(f.name for f in files) == sorted(p.name for p, _ in DASHBOARDS)
    for f in files:
        d = json.loads(f.read_text())
        assert d["timezone"] == "Europe/Berlin" and d["description"].endswith("Times are shown in Europe/Berlin.")
        assert d["description"].count("Times are shown") == 1
        assert {v["query"] for v in d["templating"]["list"] if v["name"] == "console_url"} == {
            "https://pw.plant.example:8110"}
    browser = with_timezone(DASHBOARDS[0][1], "browser")
    assert browser["timezone"] == "browser" and "the viewer's browser time" in browser["description"]
    with pytest.raises(GrafanaPushError, match="not a time zone"):
        with_timezone(DASHBOARDS[0][1], "Mars/Olympus Mons; DROP")
