"""A small legacy-CRM stand-in that behaves like the real ones behind the gateway.

Form login with a CSRF token and a session cookie, a relative redirect after login, pages
(contacts list, a form that POSTs), logout by POST, a token API under /api/, file upload and
download, a WebSocket echo, and diagnostics endpoints (a byte sink and a byte source) that
tests and benchmarks use. It knows nothing about the gateway. Not for production use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import tempfile
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from aiohttp import BodyPartReader, WSMsgType, web

SESSION_COOKIE = "crm_session"
CSRF_COOKIE = "crm_csrf"


@dataclass(frozen=True)
class DemoUser:
    name: str
    password: str
    full_name: str
    role: str
    api_token: str


DEMO_USERS = (
    DemoUser("alice", "alice-demo", "Alice Admin", "admin", "demo-token-alice"),
    DemoUser("bob", "bob-demo", "Bob Manager", "manager", "demo-token-bob"),
    DemoUser("carol", "carol-demo", "Carol Customer", "customer", "demo-token-carol"),
)


@dataclass
class CrmState:
    users: dict[str, DemoUser] = field(default_factory=lambda: {u.name: u for u in DEMO_USERS})
    sessions: dict[str, str] = field(default_factory=dict)
    contacts: list[dict[str, str]] = field(
        default_factory=lambda: [
            {"name": "Jan de Vries", "company": "Vries Makelaardij", "email": "jan@example.nl"},
            {"name": "Ingrid Hansen", "company": "Hansen Eiendom AS", "email": "ingrid@example.no"},
            {"name": "Ольга Петрова", "company": "ООО Север", "email": "olga@example.ru"},
        ]
    )
    files_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="demo-crm-")))
    logins: int = 0


STATE = web.AppKey("crm_state", CrmState)


def _page(title: str, body: str, user: str | None = None) -> web.Response:
    nav = (
        '<nav><a href="/contacts">Contacts</a> · <a href="/contacts/new">New contact</a> · '
        '<a href="/files">Files</a> · <form method="post" action="/logout" style="display:inline">'
        f"<button>Log out {escape(user)}</button></form></nav>"
        if user
        else ""
    )
    html = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)} · Demo CRM"
        "</title><link rel=stylesheet href=/static/crm.css></head><body><h1>Demo CRM</h1>"
        f"{nav}<h2>{escape(title)}</h2>{body}</body></html>"
    )
    return web.Response(text=html, content_type="text/html")


def _user(request: web.Request) -> str | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    return request.app[STATE].sessions.get(token)


def _csrf_ok(request: web.Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie, submitted)


def _require_user(request: web.Request) -> str:
    user = _user(request)
    if user is None:
        raise web.HTTPFound(location=f"/login?next={request.path}")
    return user


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound(location="/contacts" if _user(request) else "/login")


def _login_form(csrf: str, error: str = "", next_path: str = "/contacts") -> str:
    message = f'<p role="alert" class=error>{escape(error)}</p>' if error else ""
    return (
        f'{message}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
        f'<input type="hidden" name="next" value="{escape(next_path)}">'
        '<label>User name <input name="username" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        "<button>Log in</button></form>"
    )


async def login_page(request: web.Request) -> web.Response:
    csrf = secrets.token_urlsafe(24)
    response = _page("Log in", _login_form(csrf, next_path=request.query.get("next", "/contacts")))
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="Lax", path="/")
    return response


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    state = request.app[STATE]
    csrf = str(form.get("csrf_token", ""))
    if not _csrf_ok(request, csrf):
        return web.Response(status=403, text="CSRF check failed\n")
    username = str(form.get("username", ""))
    password = str(form.get("password", ""))
    user = state.users.get(username)
    if user is None or not hmac.compare_digest(user.password, password):
        fresh = secrets.token_urlsafe(24)
        response = _page("Log in", _login_form(fresh, "Wrong user name or password."))
        response.set_cookie(CSRF_COOKIE, fresh, httponly=True, samesite="Lax", path="/")
        return response
    token = secrets.token_urlsafe(32)
    state.sessions[token] = username
    state.logins += 1
    next_path = str(form.get("next", "/contacts"))
    if not next_path.startswith("/") or next_path.startswith("//"):
        next_path = "/contacts"
    response = web.HTTPFound(location=next_path)  # relative, as legacy CRMs send it
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", path="/")
    # The CSRF token rotates at login, as Django does.
    response.set_cookie(
        CSRF_COOKIE, secrets.token_urlsafe(24), httponly=True, samesite="Lax", path="/"
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    request.app[STATE].sessions.pop(token, None)
    response = web.HTTPFound(location="/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def contacts(request: web.Request) -> web.Response:
    user = _require_user(request)
    rows = "".join(
        f"<tr><td>{escape(c['name'])}</td><td>{escape(c['company'])}</td>"
        f"<td>{escape(c['email'])}</td></tr>"
        for c in request.app[STATE].contacts
    )
    table = f"<table><tr><th>Name</th><th>Company</th><th>E-mail</th></tr>{rows}</table>"
    return _page("Contacts", table, user)


async def new_contact_form(request: web.Request) -> web.Response:
    user = _require_user(request)
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    form = (
        '<form method="post" action="/contacts">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
        '<label>Name <input name="name" required></label>'
        '<label>Company <input name="company"></label>'
        '<label>E-mail <input name="email" type="email"></label><button>Save</button></form>'
    )
    response = _page("New contact", form, user)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="Lax", path="/")
    return response


async def create_contact(request: web.Request) -> web.Response:
    _require_user(request)
    form = await request.post()
    if not _csrf_ok(request, str(form.get("csrf_token", ""))):
        return web.Response(status=403, text="CSRF check failed\n")
    request.app[STATE].contacts.append(
        {k: str(form.get(k, "")) for k in ("name", "company", "email")}
    )
    raise web.HTTPSeeOther(location="/contacts")


def _api_user(request: web.Request) -> DemoUser:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("token", "bearer"):
        for user in request.app[STATE].users.values():
            if hmac.compare_digest(user.api_token, token.strip()):
                return user
    raise web.HTTPUnauthorized(
        text=json.dumps({"error": "invalid_token"}),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Token realm="demo-crm"'},
    )


async def api_contacts(request: web.Request) -> web.Response:
    _api_user(request)
    return web.json_response({"contacts": request.app[STATE].contacts})


async def api_create_contact(request: web.Request) -> web.Response:
    _api_user(request)
    data = await request.json()
    if not isinstance(data, dict) or not data.get("name"):
        return web.json_response({"error": "name is required"}, status=422)
    contact = {k: str(data.get(k, "")) for k in ("name", "company", "email")}
    request.app[STATE].contacts.append(contact)
    return web.json_response(contact, status=201)


async def files_page(request: web.Request) -> web.Response:
    user = _require_user(request)
    names = sorted(p.name for p in request.app[STATE].files_dir.iterdir())
    items = "".join(f'<li><a href="/files/{escape(n)}">{escape(n)}</a></li>' for n in names)
    form = (
        '<form method="post" action="/files" enctype="multipart/form-data">'
        '<label>File <input type="file" name="file" required></label><button>Upload</button></form>'
    )
    return _page("Files", f"<ul>{items}</ul>{form}", user)


async def upload_file(request: web.Request) -> web.Response:
    """A multipart upload, written to disk as it arrives (never held whole)."""
    _require_user(request)
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name != "file" or not part.filename:
            continue
        name = Path(part.filename).name or "upload.bin"
        target = request.app[STATE].files_dir / name
        with target.open("wb") as out:
            while chunk := await part.read_chunk(256 * 1024):
                out.write(chunk)
        raise web.HTTPSeeOther(location="/files")
    return web.Response(status=400, text="no file\n")


async def download_file(request: web.Request) -> web.StreamResponse:
    _require_user(request)
    name = Path(request.match_info["name"]).name
    target = request.app[STATE].files_dir / name
    if not target.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        target, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


async def diag_sink(request: web.Request) -> web.Response:
    """Reads any body as a stream and reports its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"bytes": size, "sha256": digest.hexdigest()})


def pattern_chunk(size: int = 256 * 1024) -> bytes:
    """The bytes the byte source repeats: not all zeros, so nothing can compress it away."""
    return bytes(range(256)) * (size // 256)


async def diag_stream(request: web.Request) -> web.StreamResponse:
    """`?bytes=N` of a repeating pattern; `&chunked=1` without a Content-Length."""
    try:
        total = int(request.query.get("bytes", "1048576"))
    except ValueError:
        raise web.HTTPBadRequest(text="bytes must be a number\n") from None
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("chunked") != "1":
        response.content_length = total
    await response.prepare(request)
    chunk = pattern_chunk()
    remaining = total
    while remaining > 0:
        piece = chunk if remaining >= len(chunk) else chunk[:remaining]
        await response.write(piece)
        remaining -= len(piece)
    await response.write_eof()
    return response


HELLO = (
    "<!doctype html><html><head><title>Demo CRM</title></head><body><p>"
    + "Hello from the demo CRM. " * 38
    + "</p></body></html>\n"
)


async def hello(request: web.Request) -> web.Response:
    """A fixed ~1 KB page: what the benchmark fetches."""
    return web.Response(text=HELLO, content_type="text/html")


async def stylesheet(request: web.Request) -> web.Response:
    css = (
        "body{font-family:system-ui,sans-serif;margin:2rem;max-width:50rem}"
        "label{display:block;margin:.5rem 0}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25rem .5rem}.error{color:#b00020}"
    )
    return web.Response(
        text=css, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


async def websocket_echo(request: web.Request) -> web.WebSocketResponse:
    """Echoes text and binary; `close:CODE` closes with that code."""
    ws = web.WebSocketResponse(protocols=("crm.v1",), autoping=True)
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            if message.data.startswith("close:"):
                await ws.close(code=int(message.data[6:]), message=b"bye")
                break
            await ws.send_str(f"echo: {message.data}")
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def build_crm_app() -> web.Application:
    app = web.Application()
    app[STATE] = CrmState()
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/contacts", contacts)
    r.add_post("/contacts", create_contact)
    r.add_get("/contacts/new", new_contact_form)
    r.add_get("/api/contacts", api_contacts)
    r.add_post("/api/contacts", api_create_contact)
    r.add_get("/files", files_page)
    r.add_post("/files", upload_file)
    r.add_get("/files/{name}", download_file)
    r.add_route("*", "/diag/sink", diag_sink)
    r.add_get("/diag/stream", diag_stream)
    r.add_get("/hello", hello)
    r.add_get("/static/crm.css", stylesheet)
    r.add_get("/ws", websocket_echo)
    return app
