"""Every typed application and request key, in one place, but for the four whose value is
a class of the web layer that reads the keys itself: GUARD (web.guard), SIGNIN (web.signin),
READINESS (web.health) and WATCH (web.socketwatch) live beside their classes, so that no
import runs in a circle."""

from __future__ import annotations

from aiohttp import web

from gateway.audit import AuditTrail
from gateway.clock import Clock
from gateway.config.model import Config
from gateway.signin.session import Session
from gateway.stores import DurableStore, SharedStore
from gateway.tasks import Background
from gateway.web.accesslog import AccessLog
from gateway.web.client import CrmClient
from gateway.web.forwarding import ClientView, OriginRewriter

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
UPSTREAM_CLIENT = web.AppKey("upstream_client", CrmClient)
REWRITER = web.AppKey("rewriter", OriginRewriter)
DURABLE = web.AppKey("durable_store", DurableStore)
SHARED = web.AppKey("shared_store", SharedStore)
ACCESS_LOG = web.AppKey("access_log", AccessLog)  # present when logging.access_log is on
AUDIT = web.AppKey("audit", AuditTrail)
TASKS = web.AppKey("tasks", Background)  # what runs beside the requests, until shutdown
# (host, port) of the admin listener when the app serves it too (the helpdesk console there)
ADMIN_LISTENER = web.AppKey("admin_listener", tuple)

VIEW = web.RequestKey("view", ClientView)  # who is asking, set first on every request
USER = web.RequestKey("user", str)  # the user name for the access log, once known ("" before)
SESSION = web.RequestKey("session", Session)  # the gateway session, once loaded
CREDENTIAL = web.RequestKey("credential", str)  # the API credential ("" = none), once looked for
# What the gateway did with the request, for the access log and the metrics: forward, deny,
# signin (sent to a sign-in step), page (one of ours), refused, error, upstream_cut (the CRM
# cut its answer mid-body), the forward-auth endpoint's auth_pass, auth_signin, auth_deny;
# "gone" is the scope's own word for a client that left before any. "" until someone decides
# (set first on every request, so reading it never raises and catches a KeyError).
DECISION = web.RequestKey("decision", str)
# The request's client waits for 100 Continue before it sends its body (gateway.web.bodies).
WAITS_FOR_CONTINUE = web.RequestKey("waits_for_continue", bool)
