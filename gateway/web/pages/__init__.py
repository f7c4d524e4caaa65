"""The gateway's own sign-in pages under the reserved prefix, one module per page group:
challenge (and codes sent by message), enrol, recovery (codes to save), account, login
(gateway mode, logout, language); routes.py is the table of them, frame.py what every page
for a session shares, render.py and errors.py how pages and error answers look.

Every form is CSRF-checked against the session; every change to how a user signs in is
decided by gateway.signin.decision first. Pages act on decisions; they never make them."""
