"""Login per browser for the operator console: a session cookie after a token login.

``POST /api/session`` with ``{"token": "..."}`` checks the token like a Bearer token (or, with
``{"name": "...", "password": "..."}``, a console user's password: ``api.users``) and answers
with a cookie ``pw_session`` (HttpOnly, SameSite=Strict, Path=/, Secure over HTTPS) and the
session's CSRF token in the body. Every tab of the browser sends the cookie, so a Grafana link
opened in a new tab is logged in; the tab gets the CSRF token from ``GET /api/session`` (a
same-origin read that another site cannot make). An action (any method other than GET/HEAD)
authenticated by the cookie must carry the CSRF token in ``X-CSRF-Token``, else it is refused
with 403. A request with ``Authorization: Bearer`` needs no CSRF token (nothing ambient).

Sessions live in the daemon's memory (a restart logs the console out) and end after ``IDLE``
seconds without a request, or at log out (method delete on ``/api/session``). Session ids and
CSRF tokens are 256 random bits; the token itself is never kept.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

from aiohttp import web

from plantwatch.daemon.alarms.api_input import InputError, parse_json

log = logging.getLogger(__name__)

COOKIE = "pw_session"
CSRF_HEADER = "X-CSRF-Token"
#: a session ends after this many seconds without a request
IDLE = 12 * 3600.0
#: at most this many sessions are kept (the oldest go first)
MAX_SESSIONS = 1000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: at most this many failed logins per name and per client address in ``FAIL_WINDOW`` seconds;
#: beyond that a login is answered 429 until the window has passed
FAIL_MAX = 10
FAIL_WINDOW = 300.0


class Identity(Protocol):
    name: str
    role: str


#: who made an API request (set by the API's authentication middleware)
USER = web.RequestKey("user", Identity)


@dataclass
class Session:
    user: Identity
    csrf: str
    last_seen: float


class CsrfRefused(Exception):
    """A cookie-authenticated action without the session's CSRF token."""


class Sessions:
    def __init__(self, check_token: Callable[[str], Identity | None], *, secure: bool, clock=time.monotonic,
                 check_password: Callable[[str, str], Identity | None] | None = None):
        self._check = check_token
        self._check_password = check_password
        self._secure = secure
        self._clock = clock
        self._by_id: dict[str, Session] = {}
        self._failed: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    # --- authentication of a request ----------------------------------------------------------------
    def user(self, request: web.Request) -> Identity | None:
        """The user of a request: its Bearer token, else its session cookie (raises
        :class:`CsrfRefused` for a cookie-authenticated action without the CSRF token)."""
        h = request.headers.get("Authorization", "")
        if h.startswith("Bearer "):
            return self._check(h[7:].strip())
        s = self._session(request)
        if s is None:
            return None
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), s.csrf.encode()):
                raise CsrfRefused()
        return s.user

    def _session(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        s = self._by_id.get(sid)
        now = self._clock()
        if s is None or now - s.last_seen > IDLE:
            self._by_id.pop(sid, None)
            return None
        s.last_seen = now
        return s

    # --- the routes -------------------------------------------------------------------------------------
    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/session", self.login)
        router.add_get("/api/session", self.current)
        router.add_delete("/api/session", self.logout)

    async def login(self, request: web.Request) -> web.Response:
        doc = parse_json(await request.read() or b"{}")
        if not isinstance(doc, dict):
            raise InputError(400, "body must be a JSON object")
        keys = [f"address:{request.remote}"] + ([f"name:{doc['name']}"] if isinstance(doc.get("name"), str) else [])
        if (wait := self._throttled(keys)) is not None:
            return web.json_response({"error": f"too many failed logins; try again in {wait:.0f} s"}, status=429,
                                     headers={"Retry-After": f"{wait:.0f}"})
        if "name" in doc and self._check_password is not None:
            name, password = doc.get("name"), doc.get("password")
            if not isinstance(name, str) or not isinstance(password, str) or not name or not password \
                    or len(name) > 64 or len(password) > 1024:
                raise InputError(400, "body: name and password: missing or not text")
            user = await asyncio.to_thread(self._check_password, name, password)  # scrypt: off the event loop
            if user is None:
                self._failure(keys)
                return web.json_response({"error": "unknown name or wrong password"}, status=401)
        else:
            token = doc.get("token")
            if not isinstance(token, str) or not token.strip():
                raise InputError(400, "body: token: missing")
            user = self._check(token.strip())
            if user is None:
                self._failure(keys)
                return web.json_response({"error": "unknown token"}, status=401)
        self._evict()
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._by_id[sid] = Session(user, csrf, self._clock())
        resp = web.json_response({"name": user.name, "role": user.role, "csrf": csrf})
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=self._secure, path="/")
        return resp

    async def current(self, request: web.Request) -> web.Response:
        s = self._session(request)
        if s is None:
            return web.json_response({"error": "not logged in"}, status=401)
        return web.json_response({"name": s.user.name, "role": s.user.role, "csrf": s.csrf})

    async def logout(self, request: web.Request) -> web.Response:
        s = self._session(request)
        if s is None:
            return web.json_response({"error": "not logged in"}, status=401)
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), s.csrf.encode()):
            return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
        self._by_id.pop(request.cookies.get(COOKIE, ""), None)
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    def _throttled(self, keys: list[str]) -> float | None:
        """Seconds to wait when a key had ``FAIL_MAX`` failed logins within the window, else None."""
        now = self._clock()
        wait = None
        for k in keys:
            q = self._failed.get(k)
            while q and now - q[0] > FAIL_WINDOW:
                q.popleft()
            if q is not None and not q:
                del self._failed[k]
            elif q is not None and len(q) >= FAIL_MAX:
                wait = max(wait or 0.0, FAIL_WINDOW - (now - q[0]))
        return wait

    def _failure(self, keys: list[str]) -> None:
        now = self._clock()
        log.warning("console: failed login (%s)", ", ".join(k for k in keys if k.startswith("address:")))
        for k in keys:
            self._failed.setdefault(k, deque(maxlen=FAIL_MAX)).append(now)
        if len(self._failed) > 10 * MAX_SESSIONS:  # bounded: forget the oldest
            for k in sorted(self._failed, key=lambda k: self._failed[k][-1])[:MAX_SESSIONS]:
                del self._failed[k]

    def _evict(self) -> None:
        now = self._clock()
        for sid in [k for k, s in self._by_id.items() if now - s.last_seen > IDLE]:
            del self._by_id[sid]
        while len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[min(self._by_id, key=lambda k: self._by_id[k].last_seen)]
