"""The HTTP layer. app.py is the composition root only; every request meets scope.py first,
then pipeline.py, which reads top to bottom: our pages, who, decide, act, proxy.

guard.py judges requests for the CRM with the live policy; signin.py owns sign-in on the
request path (the CRM's login held, finishing a sign-in) with cookies.py, devices.py and
pending.py; crmlogin.py watches the CRM's login; proxy.py, upstream.py, forwarding.py,
bodies.py and websocket.py carry requests to the CRM and back; pages/ are our own pages;
revocations.py carries admin commands to every worker; health.py,
drain.py, server.py and supervisor.py run the process."""
