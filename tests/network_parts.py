"""Real network parts for the client tests: certificates made with the openssl CLI, Debian's nginx as an
authenticating reverse proxy (Basic auth and a bearer token, HTTP and websocket), and a hostile proxy of
our own (aiohttp) that forwards to a real server and rewrites its answers."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time

from server_harness import free_port

HOSTILE_MODES = ("foreign", "dotdot", "absolute", "huge", "invalid_json", "object_info", "ws_garbage", "deny_prompt",
                 "redirect")


def make_certs(folder: str) -> dict[str, str]:
    """A private CA and a certificate for 127.0.0.1 signed by it (PEM files in `folder`)."""
    os.makedirs(folder, exist_ok=True)
    f = lambda name: os.path.join(folder, name)  # noqa: E731
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=svd-inbetween test CA",
        "-keyout", f("ca.key"), "-out", f("ca.pem"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", f("server.key"),
        "-out", f("server.csr"))
    with open(f("ext.cnf"), "w") as e:
        e.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial",
        "-days", "2", "-extfile", f("ext.cnf"), "-out", f("server.pem"))
    return {"ca": f("ca.pem"), "cert": f("server.pem"), "key": f("server.key")}


NGINX_CONF = """
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  client_max_body_size 64m;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{basic};
    access_log {d}/basic.log;
    auth_basic "svd-inbetween test";
    auth_basic_user_file {d}/htpasswd;
    location / {{ {proxy} }}
  }}
  server {{
    listen 127.0.0.1:{bearer};
    access_log {d}/bearer.log;
    if ($http_authorization != "Bearer {token}") {{ return 401; }}
    location / {{ {proxy} }}
  }}
}}
"""
PROXY = ("proxy_pass {upstream}; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
         "proxy_set_header Connection $connection_upgrade; proxy_read_timeout 300s; proxy_buffering off; "
         "proxy_ssl_verify off;")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


class Nginx:
    """Debian's nginx in front of `upstream`: `basic_url` wants user:password, `bearer_url` the token."""

    def __init__(self, folder: str, upstream: str, user: str, password: str, token: str):
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        hashed = subprocess.run(["openssl", "passwd", "-apr1", password], check=True, capture_output=True,
                                text=True).stdout.strip()
        with open(os.path.join(folder, "htpasswd"), "w") as f:
            f.write(f"{user}:{hashed}\n")
        self.basic, self.bearer = free_port(), free_port()
        conf = NGINX_CONF.format(user="user root;" if os.geteuid() == 0 else "", d=folder, basic=self.basic,
                                 bearer=self.bearer, token=token, proxy=PROXY.format(upstream=upstream))
        self.conf = os.path.join(folder, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.basic_url = f"http://127.0.0.1:{self.basic}"
        self.bearer_url = f"http://127.0.0.1:{self.bearer}"
        self.proc = subprocess.Popen([nginx_binary(), "-p", folder, "-e", os.path.join(folder, "error.log"),
                                      "-c", self.conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")
            try:
                import socket
                socket.create_connection(("127.0.0.1", self.bearer), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not listen in 20 s")

    def access_log(self, which: str) -> list[str]:
        """Lines of the 'basic' or 'bearer' server's access log (combined format: request, then status)."""
        with open(os.path.join(self.dir, f"{which}.log")) as f:
            return f.read().splitlines()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


class HostileProxy:
    """Forwards HTTP and the websocket to a real server and, per `mode` (HOSTILE_MODES), rewrites answers:
    outputs of unknown/`..` node ids, `..` or absolute file names, a huge /view, invalid /history JSON, a
    list for /object_info, garbage websocket messages, 403 for POST /prompt, a redirect elsewhere."""

    def __init__(self, upstream: str, cafile: str | None = None):
        import ssl
        self.upstream = upstream
        self.mode: str | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ssl = ssl.create_default_context(cafile=cafile) if cafile else None
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(20), "hostile proxy did not start"

    def _serve(self, ready: threading.Event) -> None:
        from aiohttp import web
        asyncio.set_event_loop(self.loop)
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        ready.set()
        self.loop.run_forever()

    async def _handle(self, request):
        import aiohttp
        from aiohttp import web
        if request.path == "/ws":
            return await self._websocket(request)
        if self.mode == "huge" and request.path == "/view":
            resp = web.StreamResponse()  # chunked: no Content-Length, the cap must hold while streaming
            await resp.prepare(request)
            try:
                for _ in range(64):
                    await resp.write(b"\0" * 2**16)
            except (ConnectionError, RuntimeError):
                pass
            return resp
        if self.mode == "object_info" and request.path == "/object_info":
            return web.Response(body=b"[1, 2, 3]", content_type="application/json")
        if self.mode == "deny_prompt" and request.path == "/prompt" and request.method == "POST":
            return web.Response(status=403, text="forbidden")  # e.g. a token that expired mid-batch
        if self.mode == "redirect" and request.path == "/system_stats":
            raise web.HTTPFound("http://elsewhere.invalid:9/system_stats")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        async with aiohttp.ClientSession() as s:
            async with s.request(request.method, self.upstream + request.path_qs, data=body, headers=headers,
                                 ssl=self._ssl) as r:
                data, status, ctype = await r.read(), r.status, r.content_type
        if request.path.startswith("/history/") and status == 200:
            data = self._history(data)
        return web.Response(body=data, status=status, content_type=ctype)

    def _history(self, data: bytes) -> bytes:
        body = json.loads(data)
        done = [e for e in body.values() if (e.get("status") or {}).get("status_str") == "success"]
        if not done:
            return data
        if self.mode == "invalid_json":
            return b'{"not json'
        for entry in done:
            outputs = entry["outputs"]
            bad = {"filename": "escape.png", "subfolder": "", "type": "output"}
            if self.mode == "foreign":
                outputs["../../../escape_node"] = {"images": [bad]}
                outputs["/tmp/escape_abs"] = {"images": [bad]}
                outputs["999"] = {"images": [bad]}
            elif self.mode in ("dotdot", "absolute"):
                node = next(iter(outputs))
                name = "../../../../escape.png" if self.mode == "dotdot" else "/tmp/escape_abs.png"
                outputs[node].setdefault("images", []).append({**bad, "filename": name})
        return json.dumps(body).encode()

    async def _websocket(self, request):
        import aiohttp
        from aiohttp import web
        client = web.WebSocketResponse()
        await client.prepare(request)
        ws_url = self.upstream.replace("http", "ws", 1) + request.path_qs
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(ws_url, ssl=self._ssl) as up:
                async def down():
                    async for msg in up:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await client.send_str(msg.data)
                            if self.mode == "ws_garbage":
                                await self._garbage(client, json.loads(msg.data))
                        elif msg.type == aiohttp.WSMsgType.BINARY:
                            await client.send_bytes(msg.data)
                task = asyncio.ensure_future(down())
                async for _ in client:  # the client sends nothing that matters; wait for it to leave
                    pass
                task.cancel()
        return client

    async def _garbage(self, client, real: dict) -> None:
        pid = (real.get("data") or {}).get("prompt_id")
        for text in ("not json", "[1, 2]", '{"type": 5}', '{"type": "status", "data": [1]}',
                     json.dumps({"type": "progress", "data": {"prompt_id": pid, "value": "x", "max": None}}),
                     json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "many"}}}}),
                     json.dumps({"type": "executing", "data": {"prompt_id": [pid], "node": None}})):
            await client.send_str(text)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(20)


def secrets_found(secrets: list[str], texts: list[str], folder: str) -> list[str]:
    """Where any secret appears: in the given texts (printed output) or any file under `folder`."""
    found = [f"printed text #{i}: {s[:2]}..." for i, t in enumerate(texts) for s in secrets if s in t]
    for d, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            found += [f"{os.path.join(d, name)}: {s[:2]}..." for s in secrets if s.encode() in data]
    return found


def files_under(folder: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs}
