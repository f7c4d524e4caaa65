"""The gateway's own HTTP/1.1 client to the CRM, for the proxy path.

connection.py: one keep-alive connection (the C response parser, flow control both ways,
the read deadline); pool.py: the connections to the CRM (slots up to `max_connections`,
idle ones closed after `keepalive`, the wait for a slot, TCP or TLS); client.py: one request
(the head written as one buffer, the body streamed, the retry rule, failures as ours).
No redirects, no decompression, no cookie jar, no pipelining. WebSocket upgrades are not
made here: web.websocket uses aiohttp's client for them, in a slot of this pool.
"""

from gateway.web.client.client import Body, CrmClient, CrmResponse, Stream

__all__ = ["Body", "CrmClient", "CrmResponse", "Stream"]
