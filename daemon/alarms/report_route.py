"""The stable address of an incident report: ``/incidents/{id}/report``.

The report itself is ``GET /api/incidents/{id}/report`` (a token or the console's session with
any role). This address serves a small page without data that fetches the report with the
browser's console session (the cookie; or a token kept by a tab, for scripts) and shows it in
place: the address stays the report's (bookmarkable, printable), never a ``blob:`` URL. Not
logged in, it says where to log in."""
from __future__ import annotations

from aiohttp import web

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Incident report</title></head><body>
<p id="status">Loading the incident report…</p>
<script>
(async () => {
  const id = location.pathname.split("/")[2];
  const token = sessionStorage.getItem("pw-token");
  const say = (html) => { document.getElementById("status").innerHTML = html; };
  const r = await fetch(`/api/incidents/${id}/report`, {credentials: "same-origin",
                        headers: token ? {"Authorization": "Bearer " + token} : {}});
  if (r.status === 401) { say(`Log in at the <a href="/incidents/${id}">console</a> first, then open the report again.`); return; }
  if (!r.ok) { say(`The report could not be loaded (HTTP ${r.status}). <a href="/incidents/${id}">Back to the console</a>`); return; }
  const html = await r.text();
  document.open(); document.write(html); document.close();
})();
</script></body></html>
"""


async def report_page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers={
        "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
                                   " img-src 'self' data:"})


def add_report_route(router: web.UrlDispatcher) -> None:
    router.add_get("/incidents/{id:\\d+}/report", report_page)
