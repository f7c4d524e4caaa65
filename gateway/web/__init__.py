"""The HTTP layer. app.py is the composition root only; every request meets scope.py first,
then pipeline.py, which reads top to bottom: our pages, who, decide, act, proxy.

guard.py judges requests for the CRM with the live policy; signin.py owns sign-in on the
request path (the CRM's login held, finishing a sign-in) with cookies.py, devices.py and
pending.py; crmlogin.py watches the CRM's login; reverify.py answers a session whose
verification is due, kept.py keeps its form or upload for after the code; proxy.py,
upstream.py, client/, forwarding.py, bodies.py and websocket.py carry requests to the CRM
and back; pages/ are our own pages; revocations.py carries admin commands to every worker;
accesslog.py writes the access log; health.py, drain.py, server.py and supervisor.py run
the process."""
