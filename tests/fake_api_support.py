"""Local fakes of the HTTP APIs issue 18's integrations call (Grafana, Vault KV v2, GCP Secret Manager),
each an aiohttp app on 127.0.0.1:0 in its own thread, recording every request it gets.

They answer as the real services document (paths, status codes, body shapes) and refuse what the real
service would refuse (a wrong or missing token, a body missing a required field, a stale
check-and-set), so a client that gets these wrong fails its test. They are stand-ins: where a real
server can run here (Prometheus, promtool) the tests use it instead.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    """One request as the fake received it (headers and body raw, for the tests' secret scans)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeServer:
    """An aiohttp app served from a background thread; `url`, `requests`, `stop()`."""

    build: Callable[[FakeServer], web.Application]
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> FakeServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def boot() -> web.AppRunner:
            @web.middleware
            async def record(request: web.Request, handler: Any) -> web.StreamResponse:
                body = await request.read()
                query: dict[str, list[str]] = {}
                for k, v in request.query.items():
                    query.setdefault(k, []).append(v)
                self.requests.append(Seen(request.method, request.path, query, dict(request.headers), body))
                return await handler(request)

            app = self.build(self)
            app.middlewares.append(record)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            return runner

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._runner = self._loop.run_until_complete(boot())  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()  # type: ignore[union-attr]
            self._loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start in 10 s")
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def everything_sent(self) -> str:
        """Every header and body the fake received, as text (for asserting what was, or was not, sent)."""
        return "\n".join(f"{r.method} {r.path} {r.query} {r.headers} {r.body.decode('utf-8', 'replace')}"
                         for r in self.requests)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


# ---- Grafana HTTP API: annotations (https://grafana.com/docs/grafana/latest/developers/http_api/annotations/) ----
def grafana_app(token: str, dashboards: set[str], login: str = "sa-1-mistral-runbooks") -> Callable[..., web.Application]:
    """POST/GET /api/annotations, DELETE /api/annotations/{id}, GET /api/user, bearer `token` required."""
    store: dict[int, dict[str, Any]] = {}

    def build(server: FakeServer) -> web.Application:
        server.annotations = store  # type: ignore[attr-defined]

        def authorized(request: web.Request) -> bool:
            return request.headers.get("Authorization") == f"Bearer {token}"

        async def post(request: web.Request) -> web.Response:
            if not authorized(request):
                return _error(401, "invalid API key")
            if request.content_type != "application/json":
                return _error(400, "bad request data")
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "bad request data")
            allowed = {"dashboardUID", "dashboardId", "panelId", "time", "timeEnd", "tags", "text"}
            if not isinstance(body, dict) or set(body) - allowed:
                return _error(400, f"bad request data: unknown fields {sorted(set(body) - allowed)}")
            if not isinstance(body.get("text"), str) or not body["text"]:
                return _error(400, "Failed to save annotation: text is required")
            if not isinstance(body.get("time"), int) or body["time"] < 10**12:  # epoch milliseconds
                return _error(400, "bad request data: time must be epoch milliseconds")
            tags = body.get("tags", [])
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                return _error(400, "bad request data: tags must be strings")
            if "dashboardUID" in body and body["dashboardUID"] not in dashboards:
                return _error(404, "Dashboard not found")
            ann_id = len(store) + 1
            store[ann_id] = {"id": ann_id, "dashboardUID": body.get("dashboardUID"), "time": body["time"],
                             "timeEnd": body.get("timeEnd", body["time"]), "tags": tags, "text": body["text"]}
            return web.json_response({"message": "Annotation added", "id": ann_id})

        async def find(request: web.Request) -> web.Response:
            if not authorized(request):
                return _error(401, "invalid API key")
            want_tags = request.query.getall("tags", [])
            uid = request.query.get("dashboardUID")
            found = [a for a in store.values() if (uid is None or a["dashboardUID"] == uid)
                     and all(t in a["tags"] for t in want_tags)]
            return web.json_response(found[: int(request.query.get("limit", "100"))])

        async def delete(request: web.Request) -> web.Response:
            if not authorized(request):
                return _error(401, "invalid API key")
            if store.pop(int(request.match_info["id"]), None) is None:
                return _error(404, "Annotation not found")
            return web.json_response({"message": "Annotation deleted"})

        async def user(request: web.Request) -> web.Response:
            if not authorized(request):
                return _error(401, "invalid API key")
            return web.json_response({"id": 2, "login": login, "isGrafanaAdmin": False})

        app = web.Application()
        app.router.add_post("/api/annotations", post)
        app.router.add_get("/api/annotations", find)
        app.router.add_delete("/api/annotations/{id}", delete)
        app.router.add_get("/api/user", user)
        return app

    return build
