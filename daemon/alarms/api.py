"""The operator API and console, served by the daemon in its own event loop (aiohttp).

Why in the daemon: the AlarmBook (the authority on alarm state) lives here, and an operator
action must be applied to it and written through the same ordered alarm write path as the
detector-driven changes (see daemon/alarms/lifecycle.py). A separate web process would race.

Authentication: ``Authorization: Bearer <token>``, or the console's session cookie after a token
login (daemon/alarms/console_session.py: HttpOnly, SameSite=Strict, a CSRF token for actions). Tokens are never stored: the config (or a
token file) holds the SHA-256 of each token with a name and a role:

* ``inspector`` — read only (alarms, incidents, reports, audit verification);
* ``operator``  — also acknowledge, shelve, unshelve, comment;
* ``engineer``  — also take alarms out of service and return them to service.

Every action is recorded (operator_actions + alarm_changes + the audit chain) with the token's
name as the actor.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from plantwatch.connectors import audit
from plantwatch.connectors.alarm_records import AlarmRecords
from plantwatch.connectors.errors import StoreUnavailable
from plantwatch.connectors.tls import ServerTls

from plantwatch.daemon.alarms.api_input import InputError, action_body, query_text
from plantwatch.daemon.alarms.console_api import ConsoleRoutes
from plantwatch.daemon.alarms.console_push import ConsolePush
from plantwatch.daemon.alarms.console_session import USER, CsrfRefused, Sessions
from plantwatch.daemon.config.console_users import DUMMY, password_matches
from plantwatch.daemon.alarms.report_route import add_report_route
from plantwatch.daemon.config.model import ApiConfig
from plantwatch.daemon.exits import StartupError
from plantwatch.daemon.alarms.lifecycle import ACTIONS, ActionError, ManagedAlarmBook

log = logging.getLogger(__name__)

ROLES = ("inspector", "operator", "engineer", "security")
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class User:
    name: str
    role: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The tokens (by SHA-256) and the console's name-and-password users (``api.users``)."""

    def __init__(self, entries: list[tuple[str, str, str]], users: list[tuple[str, str, str]] = ()):
        self._by_hash = {h: User(n, r) for n, r, h in entries}
        self._users = {n: (User(n, r), stored) for n, r, stored in users}

    @classmethod
    def from_config(cls, api: ApiConfig) -> "Tokens":
        entries = [(t.name, t.role, t.sha256) for t in api.tokens]
        if api.token_file:
            entries += read_token_file(api.token_file)
        return cls(entries, [(u.name, u.role, u.password_scrypt) for u in api.users])

    def check_password(self, name: str, password: str) -> User | None:
        """The user of a name and password (slow on purpose: scrypt; as slow for an unknown name)."""
        user, stored = self._users.get(name, (None, DUMMY))
        ok = password_matches(password, stored)
        return user if ok and user is not None else None

    def check(self, token: str) -> User | None:
        h = hash_token(token)
        for known, user in self._by_hash.items():  # compare all, in constant time each
            if hmac.compare_digest(known, h):
                return user
        return None

    def __len__(self) -> int:
        return len(self._by_hash)


def read_token_file(path: str | Path) -> list[tuple[str, str, str]]:
    """Lines ``name role sha256``; blank lines and ``#`` comments are ignored."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ROLES or len(parts[2]) != 64:
            raise ValueError(f"{path}:{i}: expected 'name role sha256' with role one of {', '.join(ROLES)}")
        out.append((parts[0], parts[1], parts[2].lower()))
    return out


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


#: longest request body (bytes): larger ones are answered 413
BODY_MAX = 64 * 1024


@web.middleware
async def _json_errors(request: web.Request, handler):
    """Every error answer is JSON with a reason: input errors (4xx, from our checks or aiohttp's:
    unknown path 404, wrong method 405, body too large 413) and, logged with its traceback, any
    unexpected failure (500)."""
    try:
        return await handler(request)
    except InputError as e:
        return _err(e.status, e.message)
    except web.HTTPException as e:
        if e.content_type == "application/json" or e.status < 400:
            raise
        reason = e.reason if e.status != 413 else f"request body larger than {BODY_MAX} bytes"
        return web.json_response({"error": reason}, status=e.status, headers={
            k: v for k, v in e.headers.items() if k in ("Allow", "WWW-Authenticate")})
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a bug must answer JSON too; it is logged with its traceback
        log.exception("api: %s %s failed", request.method, request.path)
        return _err(500, "internal error (logged)")


#: ids are PostgreSQL bigint: a larger number names nothing that can exist
ID_MAX = 2**63 - 1

def path_id(request: web.Request, what: str) -> int:
    """The ``{id}`` of the path: 400 when it is not a positive decimal number, 404 when it is
    beyond bigint (no such row can exist), both with a JSON error."""
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()):
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{what} id must be a positive integer, not {raw[:40]!r}"}),
                                 content_type="application/json")
    value = int(raw)
    if value > ID_MAX:
        raise web.HTTPNotFound(text=json.dumps({"error": f"no such {what}"}), content_type="application/json")
    return value


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(audit.clean(o)))


class Api:
    """Routes; needs the store's alarm records, the book and the op submitter."""

    def __init__(self, *, records: AlarmRecords, book: ManagedAlarmBook, submit: Callable[[list], Awaitable[asyncio.Future]],
                 tokens: Tokens, site: str, report: Callable[[int], Awaitable[str]] | None = None, metrics=None,
                 health: Callable[[], tuple[bool, str]] | None = None, db_timeout: float = 10.0,
                 push: ConsolePush | None = None, secure_cookie: bool = False):
        self.records = records
        self.health = health
        self.db_timeout = db_timeout
        self.book = book
        self.submit = submit
        self.tokens = tokens
        self.site = site
        self.report = report
        self.m = metrics
        self.push = push if push is not None else ConsolePush()
        self.sessions = Sessions(tokens.check, secure=secure_cookie, check_password=tokens.check_password)
        self.console = ConsoleRoutes(records=records, book=book, submit=submit, push=self.push, site=site,
                                     json_response=_json, path_id=path_id)

    # --- plumbing -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors, self._auth], client_max_size=BODY_MAX)
        r = app.router
        r.add_get("/", self.page)
        r.add_get("/console", self.page)
        r.add_get("/alarms/{id:\\d+}", self.page)
        r.add_get("/incidents", self.page)
        r.add_get("/incidents/{id:\\d+}", self.page)
        r.add_get("/static/{name}", self.static)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/healthz", self.healthz)
        r.add_get("/api/whoami", self.whoami)
        self.sessions.register(r)
        self.console.register(r)
        r.add_get("/api/alarms", self.list_alarms)
        r.add_get("/api/alarms/{id}", self.get_alarm)
        for action in ACTIONS:
            r.add_post(f"/api/alarms/{{id}}/{action.replace('_', '-')}", self._action(action))
        r.add_get("/api/incidents", self.list_incidents)
        r.add_get("/api/incidents/{id}", self.get_incident)
        r.add_get("/api/incidents/{id}/report", self.incident_report)
        add_report_route(r)  # the stable address /incidents/{id}/report (daemon/alarms/report_route.py)
        r.add_get("/api/audit/verify", self.audit_verify)
        return app

    PUBLIC = ("/", "/console", "/incidents", "/openapi.json", "/healthz", "/api/session")
    #: served without the database time limit: the live stream stays open
    UNBOUNDED = ("/api/stream",)

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        path = request.path
        if path in self.PUBLIC or path.startswith(("/alarms/", "/incidents/", "/static/")):
            resp = await self._bounded(handler, request)
        else:
            try:
                user = self.sessions.user(request)  # Bearer token, or the console's session cookie
            except CsrfRefused:
                return _err(403, "missing or wrong CSRF token (X-CSRF-Token) for an action of a console session")
            if user is None:
                return web.json_response({"error": "missing or unknown token"}, status=401,
                                         headers={"WWW-Authenticate": 'Bearer realm="plantwatch"'})
            request[USER] = user
            resp = await (handler(request) if path in self.UNBOUNDED else self._bounded(handler, request))
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    async def _bounded(self, handler, request: web.Request) -> web.StreamResponse:
        """Run a handler for at most ``db_timeout`` seconds: a stalled or stopped database gives a
        503 with a JSON error instead of a request that hangs. The handler runs as its own task,
        so a database call that does not even return from cancellation cannot hold the answer."""
        task = asyncio.ensure_future(handler(request))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning if abandoned
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.db_timeout)
        except StoreUnavailable as e:
            if not e.timed_out:
                log.warning("api: %s %s: database unavailable (%s)", request.method, request.path, e)
                return _err(503, f"the database is unavailable ({e.kind}); try again later")
            return self._no_answer(task, request)
        except TimeoutError:
            return self._no_answer(task, request)

    def _no_answer(self, task: asyncio.Future, request: web.Request) -> web.Response:
        """503 for a database that did not answer in time (the handler is given up)."""
        task.cancel()
        log.warning("api: %s %s: the database did not answer within %g s", request.method, request.path,
                    self.db_timeout)
        later = ("an action it accepted is written when the database answers: check the alarm before"
                 " repeating it" if request.method == "POST" else "try again later")
        return _err(503, f"the database did not answer within {self.db_timeout:g} s; {later}")

    # --- pages ------------------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        html = (STATIC / "console.html").read_text(encoding="utf-8").replace("{{SITE}}", self.site)
        return web.Response(text=html, content_type="text/html", headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline';"
                                       " style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; frame-src blob:",
            "X-Frame-Options": "DENY"})

    #: the console's scripts and styles (nothing else is served from static/)
    ASSETS = {"summary.js": "text/javascript", "detail.js": "text/javascript", "summary.css": "text/css"}

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.ASSETS:
            return _err(404, "no such file")
        return web.Response(text=(STATIC / name).read_text(encoding="utf-8"), content_type=self.ASSETS[name])

    async def openapi(self, request: web.Request) -> web.Response:
        from plantwatch.daemon.alarms.openapi import spec
        return web.json_response(spec())

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while readings are committed in time; 503 with the reason when the write path is
        stalled (the oldest received message has waited too long) or the last write failed."""
        ok, reason = self.health() if self.health is not None else (True, "ok")
        return web.json_response({"ok": ok, "reason": reason}, status=200 if ok else 503)

    async def whoami(self, request: web.Request) -> web.Response:
        u: User = request[USER]
        return _json({"name": u.name, "role": u.role, "site": self.site,
                      "may": sorted(a for a, roles in ACTIONS.items() if u.role in roles)})

    # --- alarms -----------------------------------------------------------------------------------
    async def list_alarms(self, request: web.Request) -> web.Response:
        include_normal = request.query.get("all") in ("1", "true", "yes")
        route = request.query.get("route")  # the security view: ?route=security (daemon/alarms/security_routing.py)
        if route not in (None, "security", "operator"):
            return _err(400, "route must be security or operator")
        rows = self.book.security.annotate(await self.records.list_alarms(include_normal=include_normal), route)
        return _json({"site": self.site, "time": time.time(), "flood": self.book.in_flood(), "alarms": rows})

    async def get_alarm(self, request: web.Request) -> web.Response:
        alarm_id = path_id(request, "alarm")
        a = await self.records.get_alarm(alarm_id)
        return _json(a) if a else _err(404, "no such alarm")

    def _action(self, action: str):
        async def handler(request: web.Request) -> web.Response:
            user: User = request[USER]
            alarm_id = path_id(request, "alarm")
            body = action_body(action, await request.read())  # InputError: 400 with the reason
            reason = body.reason or getattr(body, "text", None) or ""
            duration = getattr(body, "duration", None)
            if user.role not in ACTIONS[action]:
                return _err(403, f"role {user.role!r} may not {action}")
            key = await self.records.alarm_key(alarm_id)
            if key is None:
                return _err(404, "no such alarm")
            try:  # mutate the book and queue the ops with no await in between (ordering)
                ops = self.book.act(key, action, actor=user.name, role=user.role, reason=reason, duration=duration)
                done = self.submit(ops)
            except ActionError as e:
                return _err(e.status, str(e))
            fut = await done
            refused = await asyncio.wait_for(asyncio.shield(fut), 60)
            if refused:  # quarantined by the write path (dead_letters): say so, never pretend it is recorded
                log.error("%s (%s) %s alarm %d: the database refused to record it", user.name, user.role, action,
                          alarm_id)
                return _err(500, f"the database refused to record this {action} (kept in dead_letters as"
                                 " unstorable); the alarm's state in the console may differ from the record")
            if self.m is not None:
                self.m.operator_actions.labels(action).inc()
            log.info("%s (%s) %s alarm %d: %s", user.name, user.role, action, alarm_id, reason)
            return _json(await self.records.get_alarm(alarm_id))
        handler.__name__ = f"action_{action}"
        return handler

    # --- incidents --------------------------------------------------------------------------------
    async def list_incidents(self, request: web.Request) -> web.Response:
        """``?sensor=TAG`` and ``?event=ID`` narrow the list (the dashboards link to both)."""
        sensor = query_text(request.query.get("sensor"), "sensor")
        event = request.query.get("event") or None
        if event is not None:
            if not (event.isascii() and event.isdigit()) or len(event) > 18:
                return _err(400, "event must be a detector event id (a positive integer)")
            event = int(event)
        return _json({"incidents": await self.records.list_incidents(sensor=sensor, event=event)})

    async def get_incident(self, request: web.Request) -> web.Response:
        incident_id = path_id(request, "incident")
        inc = await self.records.get_incident(incident_id)
        return _json(inc) if inc else _err(404, "no such incident")

    async def incident_report(self, request: web.Request) -> web.Response:
        incident_id = path_id(request, "incident")
        if self.report is None:
            return _err(501, "reports not available")
        try:
            html = await self.report(incident_id)
        except LookupError:
            return _err(404, "no such incident")
        return web.Response(text=html, content_type="text/html")

    # --- audit ------------------------------------------------------------------------------------
    async def audit_verify(self, request: web.Request) -> web.Response:
        v = await self.records.verify_audit()
        return _json({"ok": v.ok, "entries": v.entries, "last_seq": v.last_seq, "last_hash": v.last_hash,
                      "problems": [str(p) for p in v.problems[:20]]})


async def serve(api: Api, host: str, port: int, started: asyncio.Event | None = None, *,
                tls: ServerTls | None = None) -> None:
    """Serve until cancelled (a supervised task in the daemon's TaskGroup); HTTPS with ``tls``."""
    runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls.context() if tls is not None else None)
        try:
            await site.start()
        except OSError as e:
            why = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise StartupError(f"api: cannot listen on {host}:{port}: {why}") from None
        log.info("operator console and API on %s://%s:%d/", "https" if tls else "http", host, port)
        if started is not None:
            started.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
