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
            if not self._loop.is_running():
                self._loop.close()  # else its self-pipe sockets surface as ResourceWarnings in a later test

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


# ---- Vault, KV v2 engine (https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2) ----------------------
def vault_app(token: str, mount: str = "secret", capabilities: tuple[str, ...] = ("create", "read", "update"),
              display_name: str = "token-runbooks",
              other_writer: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None,
              on_write: Callable[[str, dict[str, Any]], None] | None = None) -> Callable[..., web.Application]:
    """KV v2 data read/write with check-and-set, sys/capabilities-self and token lookup-self.

    `server.secrets[path]` is the list of versions (dicts of fields), version N at index N-1.
    `other_writer(secrets)` runs when capabilities are asked: another writer racing the rotation;
    `on_write(path, data)` after each stored version (a controller syncing it elsewhere, e.g. External Secrets).
    """
    secrets: dict[str, list[dict[str, Any]]] = {}

    def build(server: FakeServer) -> web.Application:
        server.secrets = secrets  # type: ignore[attr-defined]

        def denied(request: web.Request) -> web.Response | None:
            if request.headers.get("X-Vault-Token") != token:
                return web.json_response({"errors": ["permission denied"]}, status=403)
            return None

        def meta(n: int) -> dict[str, Any]:
            return {"created_time": "2026-11-23T10:00:00.000000Z", "custom_metadata": None, "deletion_time": "",
                    "destroyed": False, "version": n}

        async def read(request: web.Request) -> web.Response:
            if (refused := denied(request)) or "read" not in capabilities:
                return refused or web.json_response({"errors": ["1 error occurred:\n\t* permission denied\n\n"]},
                                                    status=403)
            versions = secrets.get(request.match_info["path"])
            n = int(request.query.get("version") or len(versions or []))
            if not versions or not 1 <= n <= len(versions):
                return web.json_response({"errors": []}, status=404)
            return web.json_response({"request_id": "r", "lease_id": "", "renewable": False, "lease_duration": 0,
                                      "data": {"data": dict(versions[n - 1]), "metadata": meta(n)},
                                      "wrap_info": None, "warnings": None, "auth": None})

        async def write(request: web.Request) -> web.Response:
            if (refused := denied(request)) or "update" not in capabilities:
                return refused or web.json_response({"errors": ["1 error occurred:\n\t* permission denied\n\n"]},
                                                    status=403)
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
                return web.json_response({"errors": ["no data provided"]}, status=400)
            versions = secrets.setdefault(request.match_info["path"], [])
            cas = (body.get("options") or {}).get("cas")
            if cas is not None and cas != len(versions):
                return web.json_response({"errors": ["check-and-set parameter did not match the current version"]},
                                         status=400)
            versions.append(dict(body["data"]))
            if on_write is not None:
                on_write(request.match_info["path"], dict(body["data"]))
            return web.json_response({"data": meta(len(versions))})

        async def caps(request: web.Request) -> web.Response:
            if refused := denied(request):
                return refused
            paths = (await request.json()).get("paths") or []
            if other_writer is not None:
                other_writer(secrets)
            out: dict[str, Any] = {p: list(capabilities) for p in paths}
            out["capabilities"] = list(capabilities)
            return web.json_response({**out, "data": dict(out)})

        async def lookup_self(request: web.Request) -> web.Response:
            if refused := denied(request):
                return refused
            return web.json_response({"data": {"display_name": display_name, "policies": ["mistral-rotate"],
                                               "ttl": 3600}})

        app = web.Application()
        app.router.add_get(f"/v1/{mount}/data/{{path:.+}}", read)
        app.router.add_post(f"/v1/{mount}/data/{{path:.+}}", write)
        app.router.add_put(f"/v1/{mount}/data/{{path:.+}}", write)
        app.router.add_post("/v1/sys/capabilities-self", caps)
        app.router.add_get("/v1/auth/token/lookup-self", lookup_self)
        return app

    return build


# ---- GCP Secret Manager, REST (https://cloud.google.com/secret-manager/docs/reference/rest) ----------------------
def gcp_app(token: str, project: str, secret: str, project_number: str = "123456789012",
            granted: tuple[str, ...] = ("secretmanager.versions.add", "secretmanager.versions.disable",
                                        "secretmanager.versions.access")) -> Callable[..., web.Application]:
    """access / add / disable / get / testIamPermissions for one secret; `server.versions` is
    [{"data": bytes, "state": "ENABLED"|"DISABLED"}], version N at index N-1."""
    versions: list[dict[str, Any]] = []

    def build(server: FakeServer) -> web.Application:
        server.versions = versions  # type: ignore[attr-defined]
        base = f"projects/{project_number}/secrets/{secret}"

        def error(code: int, status: str, message: str) -> web.Response:
            return web.json_response({"error": {"code": code, "message": message, "status": status}}, status=code)

        def check(request: web.Request, permission: str | None = None) -> web.Response | None:
            if request.headers.get("Authorization") != f"Bearer {token}":
                return error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
            if (request.match_info["project"], request.match_info["secret"]) != (project, secret):
                return error(404, "NOT_FOUND", f"Secret [projects/{project_number}/secrets/"
                                               f"{request.match_info['secret']}] not found or has no versions.")
            if permission and permission not in granted:
                return error(403, "PERMISSION_DENIED", f"Permission '{permission}' denied for resource "
                                                       f"'projects/{project}/secrets/{secret}' (or it may not exist).")
            return None

        def version_json(n: int) -> dict[str, Any]:
            return {"name": f"{base}/versions/{n}", "createTime": "2026-11-23T10:00:00.000000Z",
                    "state": versions[n - 1]["state"], "etag": f'"{n}"'}

        async def access(request: web.Request) -> web.Response:
            if refused := check(request, "secretmanager.versions.access"):
                return refused
            v = request.match_info["version"]
            n = len(versions) if v == "latest" else int(v)
            if not versions or not 1 <= n <= len(versions):
                return error(404, "NOT_FOUND", f"Secret Version [{base}/versions/{v}] not found.")
            if versions[n - 1]["state"] != "ENABLED":
                return error(400, "FAILED_PRECONDITION", f"Secret Version [{base}/versions/{n}] is in DISABLED state.")
            return web.json_response({"name": f"{base}/versions/{n}",
                                      "payload": {"data": base64.b64encode(versions[n - 1]["data"]).decode()}})

        async def add(request: web.Request) -> web.Response:
            if refused := check(request, "secretmanager.versions.add"):
                return refused
            body = await request.json()
            try:
                data = base64.b64decode((body.get("payload") or {})["data"], validate=True)
            except (KeyError, ValueError, TypeError):
                return error(400, "INVALID_ARGUMENT", "Invalid value at 'payload.data' (TYPE_BYTES)")
            versions.append({"data": data, "state": "ENABLED"})
            return web.json_response(version_json(len(versions)))

        async def disable(request: web.Request) -> web.Response:
            if refused := check(request, "secretmanager.versions.disable"):
                return refused
            n = int(request.match_info["version"])
            if not 1 <= n <= len(versions):
                return error(404, "NOT_FOUND", f"Secret Version [{base}/versions/{n}] not found.")
            versions[n - 1]["state"] = "DISABLED"
            return web.json_response(version_json(n))

        async def get_secret(request: web.Request) -> web.Response:
            if refused := check(request):
                return refused
            return web.json_response({"name": base, "replication": {"automatic": {}},
                                      "createTime": "2026-11-01T00:00:00Z", "etag": '"1"'})

        async def test_iam(request: web.Request) -> web.Response:
            if refused := check(request):
                return refused
            asked = (await request.json()).get("permissions") or []
            return web.json_response({"permissions": [p for p in asked if p in granted]})

        app = web.Application()
        s = "/v1/projects/{project}/secrets/{secret:[^/:]+}"
        app.router.add_get(s + "/versions/{version:[^/:]+}:access", access)
        app.router.add_post(s + ":addVersion", add)
        app.router.add_post(s + "/versions/{version:[^/:]+}:disable", disable)
        app.router.add_post(s + ":testIamPermissions", test_iam)
        app.router.add_get(s, get_secret)
        return app

    return build
