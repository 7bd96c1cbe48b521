"""Dashboards and alert rules as code: push them to Grafana (the files: :mod:`.grafana_files`).

``push(url, token, folder_uid=...)`` creates or updates, through Grafana's HTTP API (with
grafana-client), the folder, the data sources of ``dashboards/provisioning/datasources``, every
dashboard of ``dashboards/json`` and every rule of ``dashboards/provisioning/alerting/rules.yaml``.
It reads each object first and writes only what differs, so a second run makes no write request
and reports every object as "unchanged".

The same files are what Grafana's file provisioning loads on a site (deploy/site/compose.yaml);
pushing is for a Grafana whose filesystem you do not control. Contact points and the notification
policy tree are not pushed: a policy tree replaces the organisation's whole tree.

CLI (wired by the daemon's CLI as ``plantwatch grafana push``; also ``main(argv)`` here)::

    GRAFANA_TOKEN=... plantwatch grafana push --url https://grafana.example:3000
    plantwatch grafana render --config site.yaml --out DIR   # files for Grafana's provisioning
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .grafana_files import (DEFAULT_DIR, DEFAULT_TIMEZONE, PG_TYPES, PRIORITY_COLOURS, GrafanaPushError, SqlQuery,
                            alert_rule_payloads, dashboards_dir, duration_seconds, env_references, iter_panels,
                            iter_sql_queries, load_dashboards, load_datasources, load_rule_groups, render,
                            with_console_url, with_timezone)

__all__ = [
    "DEFAULT_DIR",
    "Change",
    "GrafanaPushError",
    "PushSummary",
    "PRIORITY_COLOURS",
    "SqlQuery",
    "alert_rule_payloads",
    "iter_panels",
    "iter_sql_queries",
    "load_dashboards",
    "load_datasources",
    "load_rule_groups",
    "main",
    "push",
]

# --- pushing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    kind: str    # folder | datasource | dashboard | alert-rule | rule-group
    name: str
    action: str  # created | updated | unchanged


@dataclass
class PushSummary:
    url: str
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, name: str, action: str) -> None:
        self.changes.append(Change(kind, name, action))

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def writes(self) -> int:
        return sum(1 for c in self.changes if c.action != "unchanged")

    def __str__(self) -> str:
        w = max((len(c.kind) for c in self.changes), default=4)
        lines = [f"Grafana at {self.url}:"]
        lines += [f"  {c.kind:<{w}}  {c.action:<9}  {c.name}" for c in self.changes]
        lines.append(f"{self.count('created')} created, {self.count('updated')} updated, "
                     f"{self.count('unchanged')} unchanged")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


class _Grafana:
    """grafana-client with errors turned into GrafanaPushError and 404 into None."""

    def __init__(self, url: str, token: str, timeout: float):
        from grafana_client import GrafanaApi

        p = urlparse(url)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise GrafanaPushError(f"not a Grafana URL: {url!r} (expected http(s)://host[:port][/path])")
        # grafana-client appends "api" to the URL path as is: make "/grafana" behave as "/grafana/"
        if p.path and not p.path.endswith("/"):
            url = p._replace(path=p.path + "/").geturl()
        self.url = url.rstrip("/")
        self.api = GrafanaApi.from_url(url, credential=token, timeout=timeout)

    def call(self, what: str, fn: Callable, *args, missing_ok: bool = False, **kwargs):
        import niquests.exceptions
        from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaTimeoutError

        try:
            return fn(*args, **kwargs)
        except GrafanaTimeoutError as e:
            raise GrafanaPushError(f"cannot reach Grafana at {self.url}: timed out ({e})") from None
        except niquests.exceptions.ConnectionError as e:
            raise GrafanaPushError(f"cannot reach Grafana at {self.url}: {_root_cause(e)}") from None
        except GrafanaClientError as e:
            if e.status_code in (401, 403):
                raise GrafanaPushError(
                    f"Grafana rejected the token: {e.status_code} {_message(e)} while trying to {what} "
                    "(the token needs the Admin role, or Editor plus data source and alerting write "
                    "permissions)") from None
            if e.status_code == 404 and missing_ok:
                return None
            raise GrafanaPushError(f"Grafana refused to {what}: {e.status_code} {_message(e)}") from None
        except GrafanaException as e:
            if e.status_code == 0:
                raise GrafanaPushError(f"cannot reach Grafana at {self.url}: {e.message}") from None
            raise GrafanaPushError(f"Grafana failed to {what}: {e.status_code} {_message(e)}") from None


def _message(e) -> str:
    r = e.response
    if isinstance(r, dict) and r.get("message"):
        return str(r["message"])
    return str(r or e.message)


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    return str(e) or type(e).__name__


def _dashboard_body(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("id", "version")}


def _content_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(_dashboard_body(d), sort_keys=True).encode()).hexdigest()[:12]


_DS_FIELDS = ("name", "type", "access", "url", "user", "isDefault", "basicAuth")


def _ds_payload(ds: dict) -> dict:
    body = {k: ds[k] for k in ("uid", "name", "type", "access", "url", "user", "isDefault") if k in ds}
    body.setdefault("access", "proxy")
    body["basicAuth"] = bool(ds.get("basicAuth", False))
    body["jsonData"] = dict(ds.get("jsonData") or {})
    secure = {k: v for k, v in (ds.get("secureJsonData") or {}).items() if v}
    if secure:
        body["secureJsonData"] = secure
    return body


def _ds_differs(want: dict, have: dict) -> bool:
    for k in _DS_FIELDS:
        if k in want and want[k] != have.get(k, False if k in ("isDefault", "basicAuth") else ""):
            return True
    have_json = have.get("jsonData") or {}
    return any(have_json.get(k) != v for k, v in want["jsonData"].items())


def _rule_view(r: dict) -> dict:
    """The parts of a rule push owns, normalised so Grafana's echo compares equal."""
    return {
        "title": r.get("title"), "condition": r.get("condition"), "folderUID": r.get("folderUID"),
        "ruleGroup": r.get("ruleGroup"), "noDataState": r.get("noDataState"),
        "execErrState": r.get("execErrState"), "for": duration_seconds(r.get("for")),
        "keep_firing_for": duration_seconds(r.get("keep_firing_for")),
        "annotations": r.get("annotations") or {}, "labels": r.get("labels") or {},
        "isPaused": bool(r.get("isPaused")),
        "data": [{"refId": q.get("refId"), "queryType": q.get("queryType") or "",
                  "relativeTimeRange": {"from": int((q.get("relativeTimeRange") or {}).get("from", 0)),
                                        "to": int((q.get("relativeTimeRange") or {}).get("to", 0))},
                  "datasourceUid": q.get("datasourceUid"), "model": q.get("model")}
                 for q in r.get("data") or []],
    }


def push(url: str, token: str, *, folder_uid: str = "plantwatch", folder_title: str = "Plantwatch",
         root: str | Path | None = None, env: Mapping[str, str] | None = None, timeout: float = 10.0,
         rotate_secrets: bool = False, console_url: str | None = None,
         timezone: str | None = None) -> PushSummary:
    """Create or update folder, data sources, dashboards and alert rules; write only what differs.

    ``env`` supplies the $VARs of the data source file (default: this process's environment).
    Data source passwords cannot be read back from Grafana, so an existing password is kept
    unless ``rotate_secrets`` is set. ``console_url`` replaces the dashboards' default
    ``console_url`` (the API's default address) with the site's; ``timezone`` replaces their
    time zone (UTC) with the site's choice ("browser" or an IANA name).
    """
    if not token:
        raise GrafanaPushError("no Grafana token given (--token or GRAFANA_TOKEN): create a service account "
                               "token with the Admin role in Grafana")
    root = dashboards_dir(root)
    datasources = load_datasources(root, env)
    dashboards = load_dashboards(root)
    if console_url is not None:
        dashboards = [(p, with_console_url(d, console_url)) for p, d in dashboards]
    if timezone is not None:
        dashboards = [(p, with_timezone(d, timezone)) for p, d in dashboards]
    groups = load_rule_groups(root)
    g = _Grafana(url, token, timeout)
    api = g.api
    s = PushSummary(g.url)

    # folder (the first request also checks the token and that Grafana is reachable)
    have = g.call(f"read folder {folder_uid}", api.folder.get_folder, folder_uid, missing_ok=True)
    if have is None:
        g.call(f"create folder {folder_uid}", api.folder.create_folder, folder_title, uid=folder_uid)
        s.add("folder", folder_title, "created")
    elif have.get("title") != folder_title:
        g.call(f"rename folder {folder_uid}", api.folder.update_folder, folder_uid, title=folder_title,
               version=have.get("version"))
        s.add("folder", folder_title, "updated")
    else:
        s.add("folder", folder_title, "unchanged")

    for ds in datasources:
        want = _ds_payload(ds)
        uid = want["uid"]
        have = g.call(f"read data source {uid}", api.datasource.get_datasource_by_uid, uid, missing_ok=True)
        if have is None:
            if "secureJsonData" not in want and ds.get("secureJsonData"):
                s.notes.append(f"data source {want['name']!r} created without a password (its variable is empty)")
            g.call(f"create data source {uid}", api.datasource.create_datasource, want)
            s.add("datasource", want["name"], "created")
            continue
        has_secret = all((have.get("secureJsonFields") or {}).get(k) for k in want.get("secureJsonData", {}))
        if _ds_differs(want, have) or not has_secret or rotate_secrets:
            body = dict(want, id=have.get("id"))
            if has_secret and not rotate_secrets:
                body.pop("secureJsonData", None)  # keep the stored password
            g.call(f"update data source {uid}", api.datasource.update_datasource_by_uid, uid, body)
            s.add("datasource", want["name"], "updated")
        else:
            s.add("datasource", want["name"], "unchanged")

    for path, d in dashboards:
        uid = d.get("uid")
        if not uid:
            raise GrafanaPushError(f"{path}: dashboard has no uid")
        msg = f"plantwatch grafana push ({path.name} {_content_hash(d)})"
        have = g.call(f"read dashboard {uid}", api.dashboard.get_dashboard, uid, missing_ok=True)
        if have is None:
            body = dict(copy.deepcopy(d), id=None)
            body.pop("version", None)
            g.call(f"create dashboard {uid}", api.dashboard.update_dashboard,
                   {"dashboard": body, "folderUid": folder_uid, "overwrite": False, "message": msg})
            s.add("dashboard", d.get("title", uid), "created")
            continue
        stored = have.get("dashboard") or {}
        if (_dashboard_body(stored) == _dashboard_body(d)
                and (have.get("meta") or {}).get("folderUid") == folder_uid):
            s.add("dashboard", d.get("title", uid), "unchanged")
            continue
        body = dict(copy.deepcopy(d), id=stored.get("id"), version=stored.get("version"))
        g.call(f"update dashboard {uid}", api.dashboard.update_dashboard,
               {"dashboard": body, "folderUid": folder_uid, "overwrite": False, "message": msg})
        s.add("dashboard", d.get("title", uid), "updated")

    ap = api.alertingprovisioning
    for rule in alert_rule_payloads(groups, folder_uid):
        uid = rule["uid"]
        have = g.call(f"read alert rule {uid}", ap.get_alertrule, uid, missing_ok=True)
        if have is None:
            g.call(f"create alert rule {uid}", ap.create_alertrule, rule, disable_provenance=True)
            s.add("alert-rule", rule["title"], "created")
        elif _rule_view(have) != _rule_view(rule):
            g.call(f"update alert rule {uid}", ap.update_alertrule, uid, rule, disable_provenance=True)
            s.add("alert-rule", rule["title"], "updated")
        else:
            s.add("alert-rule", rule["title"], "unchanged")
    for grp in groups:
        want_s = int(duration_seconds(grp.get("interval", "1m")))
        have = g.call(f"read rule group {grp['name']}", ap.get_rule_group, folder_uid, grp["name"], missing_ok=True)
        if have is None:
            continue  # a group without rules does not exist in Grafana
        if int(have.get("interval") or 0) == want_s:
            s.add("rule-group", f"{grp['name']} (every {want_s} s)", "unchanged")
            continue
        body = {"title": grp["name"], "folderUid": folder_uid, "interval": want_s, "rules": have.get("rules") or []}
        g.call(f"set the interval of rule group {grp['name']}", ap.update_rule_group, folder_uid, grp["name"], body,
               disable_provenance=True)
        s.add("rule-group", f"{grp['name']} (every {want_s} s)", "updated")
    return s


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plantwatch grafana push",
                                 description="Create or update plantwatch's folder, data sources, dashboards and "
                                             "alert rules in a Grafana; unchanged objects are not written.")
    ap.add_argument("--url", default=os.environ.get("GRAFANA_URL"), help="Grafana base URL (env GRAFANA_URL)")
    ap.add_argument("--token", default=os.environ.get("GRAFANA_TOKEN"),
                    help="service account token (env GRAFANA_TOKEN; prefer the variable: a token on the "
                         "command line is visible to other users of the machine)")
    ap.add_argument("--folder-uid", default="plantwatch")
    ap.add_argument("--folder-title", default="Plantwatch")
    ap.add_argument("--dir", default=None, help="the dashboards/ folder (default: the one of this checkout, "
                                                "or PLANTWATCH_DASHBOARDS_DIR)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    ap.add_argument("--console-url", default=os.environ.get("PLANTWATCH_CONSOLE_URL"),
                    help="where operators reach the console (the dashboards' links); default: the dashboards' "
                         "own, the API's default address (env PLANTWATCH_CONSOLE_URL)")
    ap.add_argument("--timezone", default=None,
                    help="time zone of the dashboards: utc (theirs), browser (the viewer's) or an IANA name")
    ap.add_argument("--rotate-secrets", action="store_true",
                    help="send data source passwords even when Grafana already has one")
    args = ap.parse_args(argv)
    if not args.url:
        ap.error("--url (or GRAFANA_URL) is required")
    try:
        summary = push(args.url, args.token or "", folder_uid=args.folder_uid, folder_title=args.folder_title,
                       root=args.dir, timeout=args.timeout, rotate_secrets=args.rotate_secrets,
                       console_url=args.console_url, timezone=args.timezone)
    except GrafanaPushError as e:
        print(f"plantwatch grafana push: error: {e}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
