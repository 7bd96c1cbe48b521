"""`grafana push` against a local stand-in for Grafana's HTTP API.

The stand-in checks every request against the payload formats of Grafana's HTTP API docs (method,
path, required fields, types, the Bearer token) and keeps state the way Grafana does (uids, ids,
versions, optimistic locking, provenance), so pushing twice must make no write request.
"""
from __future__ import annotations

import copy
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from plantwatch.connectors.grafana import GrafanaPushError, load_dashboards, main, push

TOKEN = "glsa_plantwatch_test_token"
VIEWER_TOKEN = "glsa_viewer_only"
ENV = {"PLANTWATCH_DB_ADDR": "timescaledb:5432", "PLANTWATCH_DB_NAME": "plantwatch",
       "PLANTWATCH_READER_PASSWORD": "reader-secret", "PLANTWATCH_PROMETHEUS_URL": "http://prometheus:9090"}
UID_RE = re.compile(r"^[a-zA-Z0-9\-_]{1,40}$")
NO_DATA = {"Alerting", "NoData", "OK", "KeepLast"}
EXEC_ERR = {"Alerting", "Error", "OK", "KeepLast"}
DUR_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$|^0$")


def _prom_duration(seconds: int) -> str:
    """prometheus/common model.Duration.String()."""
    if seconds == 0:
        return "0s"
    out = ""
    for unit, size in (("y", 31536000), ("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out


def _seconds(d: str) -> int:
    total = 0
    for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", d):
        total += int(n) * {"ms": 0, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[u]
    return total


class FakeGrafana:
    def __init__(self):
        self.requests: list[tuple[str, str, dict | list | None, dict]] = []
        self.problems: list[str] = []
        self.folders: dict[str, dict] = {}
        self.datasources: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
        self.groups: dict[tuple[str, str], int] = {}
        self.next_id = 1
        self.lock = threading.Lock()

    # -- helpers
    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def writes(self):
        return [(m, p) for m, p, _, _ in self.requests if m != "GET"]

    def _need(self, body, fields, where):
        if not isinstance(body, dict):
            raise _Bad(400, f"{where}: body must be a JSON object")
        for f, typ in fields.items():
            if f not in body:
                raise _Bad(400, f"{where}: missing required field {f!r}")
            if typ is not None and not isinstance(body[f], typ):
                raise _Bad(400, f"{where}: field {f!r} must be {typ}")

    # -- routing
    def handle(self, method: str, path: str, body, headers) -> tuple[int, object]:
        auth = headers.get("Authorization", "")
        if auth not in (f"Bearer {TOKEN}", f"Bearer {VIEWER_TOKEN}"):
            return 401, {"message": "Invalid API key", "traceID": ""}
        if auth == f"Bearer {VIEWER_TOKEN}":
            return 403, {"message": "You'll need additional permissions to perform this action. "
                                    "Permissions needed: folders:read"}
        if method in ("POST", "PUT") and headers.get("Content-Type", "").split(";")[0] != "application/json":
            raise _Bad(400, f"{method} {path}: Content-Type must be application/json")
        for pattern, fn in self.routes:
            m = re.fullmatch(pattern[1], path)
            if m and pattern[0] == method:
                return fn(self, body, headers, *m.groups())
        self.problems.append(f"unexpected request {method} {path}")
        return 404, {"message": "Not found"}

    # folders: docs/sources/developers/http_api/folder.md
    def get_folder(self, body, headers, uid):
        f = self.folders.get(uid)
        return (200, f) if f else (404, {"message": "folder not found", "status": "not-found"})

    def post_folder(self, body, headers):
        self._need(body, {"title": str}, "POST /api/folders")
        uid = body.get("uid") or f"f{self._id()}"
        if not UID_RE.match(uid):
            raise _Bad(400, "invalid uid")
        if uid in self.folders:
            return 409, {"message": "a folder with the same uid already exists"}
        self.folders[uid] = {"id": self._id(), "uid": uid, "title": body["title"], "version": 1,
                             "url": f"/dashboards/f/{uid}/"}
        return 200, self.folders[uid]

    def put_folder(self, body, headers, uid):
        self._need(body, {"title": str}, "PUT /api/folders/:uid")
        f = self.folders.get(uid)
        if not f:
            return 404, {"message": "folder not found"}
        if not body.get("overwrite") and body.get("version") != f["version"]:
            return 412, {"message": "the folder has been changed by someone else", "status": "version-mismatch"}
        f.update(title=body["title"], version=f["version"] + 1)
        return 200, f

    # data sources: docs/sources/developers/http_api/data_source.md
    def _ds_store(self, body, old=None):
        self._need(body, {"name": str, "type": str, "access": str}, "data source")
        if body["access"] not in ("proxy", "direct"):
            raise _Bad(400, "access must be proxy or direct")
        uid = body.get("uid") or f"ds{self._id()}"
        if not UID_RE.match(uid):
            raise _Bad(400, "invalid data source uid")
        for other in self.datasources.values():
            if other["name"] == body["name"] and other["uid"] != uid:
                return 409, {"message": "data source with the same name already exists"}
        secure = dict((old or {}).get("secureJsonFields") or {})
        for k, v in (body.get("secureJsonData") or {}).items():
            if not isinstance(v, str):
                raise _Bad(400, "secureJsonData values must be strings")
            secure[k] = True
        ds = {"id": (old or {}).get("id") or self._id(), "uid": uid, "orgId": 1, "name": body["name"],
              "type": body["type"], "typeLogoUrl": "", "access": body["access"], "url": body.get("url", ""),
              "user": body.get("user", ""), "database": body.get("database", ""),
              "basicAuth": bool(body.get("basicAuth", False)), "basicAuthUser": "", "withCredentials": False,
              "isDefault": bool(body.get("isDefault", False)), "jsonData": body.get("jsonData") or {},
              "secureJsonFields": secure, "version": (old or {}).get("version", 0) + 1, "readOnly": False}
        self.datasources[uid] = ds
        return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource updated" if old else "Datasource added",
                     "name": ds["name"]}

    def get_ds(self, body, headers, uid):
        ds = self.datasources.get(uid)
        return (200, ds) if ds else (404, {"message": "Data source not found"})

    def post_ds(self, body, headers):
        if body.get("uid") in self.datasources:
            return 409, {"message": "data source with the same uid already exists"}
        return self._ds_store(body)

    def put_ds(self, body, headers, uid):
        old = self.datasources.get(uid)
        if not old:
            return 404, {"message": "Data source not found"}
        return self._ds_store(dict(body, uid=body.get("uid") or uid), old)

    # dashboards: docs/sources/developers/http_api/dashboard.md
    def get_dash(self, body, headers, uid):
        d = self.dashboards.get(uid)
        if not d:
            return 404, {"message": "Dashboard not found"}
        return 200, {"dashboard": copy.deepcopy(d["dashboard"]),
                     "meta": {"folderUid": d["folderUid"], "version": d["dashboard"]["version"],
                              "url": f"/d/{uid}/x", "provisioned": False}}

    def post_dash(self, body, headers):
        self._need(body, {"dashboard": dict}, "POST /api/dashboards/db")
        dash = body["dashboard"]
        self._need(dash, {"title": str}, "dashboard")
        for k, typ in (("overwrite", bool), ("message", str), ("folderUid", str)):
            if k in body and not isinstance(body[k], typ):
                raise _Bad(400, f"{k} must be {typ}")
        if "folderUid" in body and body["folderUid"] and body["folderUid"] not in self.folders:
            return 400, {"message": "folder not found"}
        uid = dash.get("uid") or f"d{self._id()}"
        if not UID_RE.match(uid):
            raise _Bad(400, "dashboard uid must be at most 40 characters")
        old = self.dashboards.get(uid)
        if old and not body.get("overwrite") and dash.get("version") != old["dashboard"]["version"]:
            return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
        stored = copy.deepcopy(dash)
        stored["uid"] = uid
        stored["id"] = old["dashboard"]["id"] if old else self._id()
        stored["version"] = old["dashboard"]["version"] + 1 if old else 1
        self.dashboards[uid] = {"dashboard": stored, "folderUid": body.get("folderUid", "")}
        return 200, {"id": stored["id"], "uid": uid, "url": f"/d/{uid}/x", "status": "success",
                     "version": stored["version"], "slug": "x"}

    # alerting provisioning: docs/sources/developers/http_api/alerting_provisioning.md
    def _check_rule(self, r):
        self._need(r, {"orgID": int, "folderUID": str, "ruleGroup": str, "title": str, "condition": str,
                       "data": list, "noDataState": str, "execErrState": str, "for": str}, "alert rule")
        if r["folderUID"] not in self.folders:
            raise _Bad(400, f"folder {r['folderUID']} does not exist")
        if not (1 <= len(r["ruleGroup"]) <= 190 and 1 <= len(r["title"]) <= 190):
            raise _Bad(400, "ruleGroup and title must be 1..190 characters")
        if r.get("uid") is not None and not UID_RE.match(r["uid"]):
            raise _Bad(400, "invalid rule uid")
        if r["noDataState"] not in NO_DATA or r["execErrState"] not in EXEC_ERR:
            raise _Bad(400, "invalid noDataState / execErrState")
        for k in ("for", "keep_firing_for"):
            if k in r and not DUR_RE.match(str(r[k])):
                raise _Bad(400, f"{k} is not a duration")
        refs = set()
        for q in r["data"]:
            self._need(q, {"refId": str, "datasourceUid": str, "model": dict}, "alert query")
            if q["datasourceUid"] != "__expr__" and q["datasourceUid"] not in self.datasources:
                raise _Bad(400, f"data source {q['datasourceUid']} not found")
            rtr = q.get("relativeTimeRange") or {}
            if not all(isinstance(rtr.get(k, 0), int) for k in ("from", "to")):
                raise _Bad(400, "relativeTimeRange from/to are seconds")
            refs.add(q["refId"])
        if r["condition"] not in refs:
            raise _Bad(400, f"condition {r['condition']} is not one of the queries")
        for other in self.rules.values():
            if (other["uid"] != r.get("uid") and other["folderUID"] == r["folderUID"]
                    and other["title"] == r["title"]):
                raise _Bad(409, "a rule with this title already exists in the folder")

    def _store_rule(self, r, headers, old=None):
        stored = copy.deepcopy(r)
        stored["id"] = (old or {}).get("id") or self._id()
        stored["for"] = _prom_duration(_seconds(r["for"]))
        stored["keep_firing_for"] = _prom_duration(_seconds(r.get("keep_firing_for", "0s")))
        stored["provenance"] = "" if headers.get("X-Disable-Provenance") == "true" else "api"
        stored["updated"] = "2025-01-01T00:00:00Z"
        stored.setdefault("isPaused", False)
        stored["notification_settings"] = None
        stored["record"] = None
        self.rules[stored["uid"]] = stored
        self.groups.setdefault((r["folderUID"], r["ruleGroup"]), 60)
        return stored

    def get_rule(self, body, headers, uid):
        r = self.rules.get(uid)
        return (200, copy.deepcopy(r)) if r else (404, {"message": "rule not found"})

    def post_rule(self, body, headers):
        self._check_rule(body)
        if body.get("uid") in self.rules:
            return 409, {"message": "rule uid already exists"}
        return 201, self._store_rule(body, headers)

    def put_rule(self, body, headers, uid):
        old = self.rules.get(uid)
        if not old:
            return 404, {"message": "rule not found"}
        if old["provenance"] == "file":
            return 400, {"message": "cannot change provenance from 'file' to 'api'"}
        self._check_rule(dict(body, uid=uid))
        return 200, self._store_rule(dict(body, uid=uid), headers, old)

    def get_group(self, body, headers, folder, group):
        if (folder, group) not in self.groups:
            return 404, {"message": "rule group not found"}
        rules = [copy.deepcopy(r) for r in self.rules.values() if r["folderUID"] == folder and r["ruleGroup"] == group]
        return 200, {"title": group, "folderUid": folder, "interval": self.groups[(folder, group)], "rules": rules}

    def put_group(self, body, headers, folder, group):
        self._need(body, {"interval": int, "rules": list}, "rule group")
        if body["interval"] <= 0 or body["interval"] % 10:
            raise _Bad(400, "interval must be a positive multiple of the 10 s base interval")
        self.groups[(folder, group)] = body["interval"]
        return 200, self.get_group(None, headers, folder, group)[1]

    routes = [
        (("GET", r"/api/folders/([^/]+)"), get_folder),
        (("POST", r"/api/folders"), post_folder),
        (("PUT", r"/api/folders/([^/]+)"), put_folder),
        (("GET", r"/api/datasources/uid/([^/]+)"), get_ds),
        (("POST", r"/api/datasources"), post_ds),
        (("PUT", r"/api/datasources/uid/([^/]+)"), put_ds),
        (("GET", r"/api/dashboards/uid/([^/]+)"), get_dash),
        (("POST", r"/api/dashboards/db"), post_dash),
        (("GET", r"/api/v1/provisioning/alert-rules/([^/]+)"), get_rule),
        (("POST", r"/api/v1/provisioning/alert-rules"), post_rule),
        (("PUT", r"/api/v1/provisioning/alert-rules/([^/]+)"), put_rule),
        (("GET", r"/api/v1/provisioning/folder/([^/]+)/rule-groups/([^/]+)"), get_group),
        (("PUT", r"/api/v1/provisioning/folder/([^/]+)/rule-groups/([^/]+)"), put_group),
    ]


class _Bad(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _serve(fake: FakeGrafana):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _do(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            headers = {k: v for k, v in self.headers.items()}
            with fake.lock:
                fake.requests.append((self.command, path, body, headers))
                try:
                    status, out = fake.handle(self.command, path, body, headers)
                except _Bad as e:
                    fake.problems.append(f"{self.command} {path}: {e}")
                    status, out = e.status, {"message": str(e)}
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _do

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return server


@pytest.fixture
def grafana():
    fake = FakeGrafana()
    server = _serve(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def test_push_twice_second_run_writes_nothing(grafana):
    n_dash = len(load_dashboards())
    first = push(grafana.url, TOKEN, folder_uid="plantwatch", env=ENV)
    assert grafana.problems == []
    assert first.count("created") == 1 + 2 + n_dash + 4
    assert {c.kind for c in first.changes} == {"folder", "datasource", "dashboard", "alert-rule", "rule-group"}
    # what Grafana holds now
    assert set(grafana.datasources) == {"plantwatch-pg", "plantwatch-prom"}
    pg = grafana.datasources["plantwatch-pg"]
    assert pg["user"] == "plantwatch_reader" and pg["url"] == "timescaledb:5432"
    assert pg["jsonData"]["timescaledb"] is True and pg["jsonData"]["database"] == "plantwatch"
    assert pg["secureJsonFields"] == {"password": True}
    assert all(d["folderUid"] == "plantwatch" for d in grafana.dashboards.values())
    assert all(r["provenance"] == "" for r in grafana.rules.values())  # X-Disable-Provenance: editable
    assert {r["uid"] for r in grafana.rules.values()} == {"pw-critical-unacked", "pw-sensors-stale",
                                                           "pw-ingest-stopped", "pw-dead-letters-high"}
    writes_before = len(grafana.writes())

    second = push(grafana.url, TOKEN, folder_uid="plantwatch", env=ENV)
    assert grafana.problems == []
    assert len(grafana.writes()) == writes_before, grafana.writes()[writes_before:]
    assert second.writes == 0 and second.count("unchanged") == len(second.changes)
    print(f"\nfirst push: {first.count('created')} created; second push: {second.count('unchanged')} unchanged, "
          f"{len(grafana.writes()) - writes_before} write requests")
    assert "0 created, 0 updated" in str(second)


def test_push_updates_only_what_changed(grafana):
    push(grafana.url, TOKEN, env=ENV)
    # someone edits a dashboard in the UI, renames the folder, relaxes a rule, slows the group
    uid = "plantwatch-overview"
    grafana.dashboards[uid]["dashboard"]["title"] = "edited in the UI"
    grafana.dashboards[uid]["dashboard"]["version"] += 1
    grafana.folders["plantwatch"]["title"] = "Renamed"
    grafana.rules["pw-ingest-stopped"]["for"] = "10m"
    grafana.groups[("plantwatch", "plantwatch")] = 300
    grafana.datasources["plantwatch-prom"]["url"] = "http://elsewhere:9090"
    before = len(grafana.writes())
    s = push(grafana.url, TOKEN, env=ENV)
    assert grafana.problems == []
    assert sorted((c.kind, c.action) for c in s.changes if c.action != "unchanged") == [
        ("alert-rule", "updated"), ("dashboard", "updated"), ("datasource", "updated"), ("folder", "updated"),
        ("rule-group", "updated")]
    assert len(grafana.writes()) - before == 5
    assert grafana.dashboards[uid]["dashboard"]["title"] == "Plant overview"
    assert grafana.rules["pw-ingest-stopped"]["for"] == "1m"
    assert grafana.groups[("plantwatch", "plantwatch")] == 60
    # the stored password was not resent (Grafana cannot show it, push cannot compare it)
    put_prom = [b for m, p, b, _ in grafana.requests if m == "PUT" and p.startswith("/api/datasources/")]
    assert put_prom and all("secureJsonData" not in b for b in put_prom)


def test_wrong_token_is_a_clear_error(grafana):
    with pytest.raises(GrafanaPushError, match=r"^Grafana rejected the token: 401 Invalid API key"):
        push(grafana.url, "not-the-token", env=ENV)
    with pytest.raises(GrafanaPushError, match=r"^Grafana rejected the token: 403"):
        push(grafana.url, VIEWER_TOKEN, env=ENV)
    assert grafana.writes() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_grafana_is_a_clear_error():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(GrafanaPushError, match=rf"^cannot reach Grafana at {re.escape(url)}: "):
        push(url, TOKEN, env=ENV, timeout=2)


def test_grafana_that_never_answers_times_out():
    with socket.socket() as s:  # accepts connections (backlog) but never replies
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(GrafanaPushError, match=rf"^cannot reach Grafana at {re.escape(url)}: "):
            push(url, TOKEN, env=ENV, timeout=0.5)


def test_missing_environment_fails_before_any_request(grafana):
    env = dict(ENV)
    del env["PLANTWATCH_READER_PASSWORD"]
    with pytest.raises(GrafanaPushError, match="PLANTWATCH_READER_PASSWORD"):
        push(grafana.url, TOKEN, env=env)
    assert grafana.requests == []


def test_main(grafana, monkeypatch, capsys):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["--url", grafana.url]) == 0
    assert "created" in capsys.readouterr().out
    assert main(["--url", grafana.url]) == 0
    assert "0 created, 0 updated" in capsys.readouterr().out
    assert main(["--url", grafana.url, "--token", "wrong"]) == 1
    assert "error: Grafana rejected the token: 401" in capsys.readouterr().err
    assert main(["--url", grafana.url, "--console-url", "http://console.test:8110"]) == 0
    assert "updated" in capsys.readouterr().out


def test_console_url_is_set_on_every_dashboard_when_pushing(grafana):
    """A site whose console is not at the API's default address sets it once, at push time."""
    push(grafana.url, TOKEN, env=ENV, console_url="https://console.site.example/")
    assert grafana.problems == []
    for d in grafana.dashboards.values():
        (const,) = [v for v in d["dashboard"]["templating"]["list"] if v["name"] == "console_url"]
        assert const["query"] == "https://console.site.example"
    writes = len(grafana.writes())
    push(grafana.url, TOKEN, env=ENV, console_url="https://console.site.example")
    assert len(grafana.writes()) == writes  # the same URL again: nothing to write
    with pytest.raises(GrafanaPushError, match="console URL"):
        push(grafana.url, TOKEN, env=ENV, console_url="console.site.example")
