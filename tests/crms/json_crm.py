"""A single-page CRM: the page is an empty shell and a script; the script signs in through a
JSON API (`POST /api/v1/auth/login` with `{"email", "password"}`) that answers 200 and sets a
token cookie, or 401; everything else is JSON under /api/v1/ read with that cookie; logout is
`POST /api/v1/auth/logout`. No <form> anywhere."""

from __future__ import annotations

import json
import secrets

from aiohttp import web

from tests.crms.common import new_app

TOKEN_COOKIE = "crm_token"
USERS = {"mia@acme.example": "mia-secret-77", "olaf@acme.example": "olaf-secret-88"}
TOKENS = web.AppKey("json_tokens", dict[str, str])  # token → user

SHELL = """<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Acme Cloud CRM</title>
<script src="/assets/app.js" defer></script></head><body><div id="app">Loading…</div></body></html>"""

APP_JS = """\
"use strict";
const api = (path, options = {}) => fetch(path, {credentials: "same-origin", ...options});

async function signIn(email, password) {
  const r = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: {"Content-Type": "application/json", "Accept": "application/json"},
    body: JSON.stringify({email: email, password: password}),
  });
  if (r.status === 401) return showError("Wrong e-mail address or password");
  location.hash = "#/contacts";
}

async function signOut() {
  await api("/api/v1/auth/logout", {method: "POST"});
  location.hash = "#/";
}

async function contacts() {
  const r = await api("/api/v1/contacts");
  return r.ok ? r.json() : [];
}
"""


def _user(request: web.Request) -> str:
    return request.app[TOKENS].get(request.cookies.get(TOKEN_COOKIE, ""), "")


async def shell(request: web.Request) -> web.Response:
    return web.Response(text=SHELL, content_type="text/html")


async def script(request: web.Request) -> web.Response:
    return web.Response(text=APP_JS, content_type="application/javascript")


async def login(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return web.json_response({"error": "unsupported_media_type"}, status=415)
    try:
        data = json.loads(await request.text())
    except ValueError:
        return web.json_response({"error": "bad_json"}, status=400)
    email, password = str(data.get("email", "")), str(data.get("password", ""))
    if email not in USERS or not secrets.compare_digest(USERS[email], password):
        return web.json_response({"error": "invalid_credentials"}, status=401)
    token = secrets.token_urlsafe(24)
    request.app[TOKENS][token] = email
    response = web.json_response({"user": {"email": email}})
    response.headers.add("Set-Cookie", f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax")
    return response


async def logout(request: web.Request) -> web.Response:
    request.app[TOKENS].pop(request.cookies.get(TOKEN_COOKIE, ""), None)
    response = web.Response(status=204)
    response.headers.add("Set-Cookie", f"{TOKEN_COOKIE}=; Path=/; Max-Age=0")
    return response


async def me(request: web.Request) -> web.Response:
    user = _user(request)
    if not user:
        return web.json_response({"error": "unauthenticated"}, status=401)
    return web.json_response({"email": user})


async def contacts(request: web.Request) -> web.Response:
    if not _user(request):
        return web.json_response({"error": "unauthenticated"}, status=401)
    return web.json_response([{"name": "Jan de Vries"}, {"name": "Ingrid Hansen"}])


def json_crm_app() -> web.Application:
    app = new_app()
    app[TOKENS] = {}
    r = app.router
    r.add_get("/", shell)
    r.add_get("/assets/app.js", script)
    r.add_post("/api/v1/auth/login", login)
    r.add_post("/api/v1/auth/logout", logout)
    r.add_get("/api/v1/me", me)
    r.add_get("/api/v1/contacts", contacts)
    return app
