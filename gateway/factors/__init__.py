"""Second factors: the SecondFactor Protocol (protocol.py), one module per factor (totp.py,
recovery.py, and codes.py for codes sent by SMS or e-mail, contact.py their channels), and the
registry that builds them (registry.py). Adding a factor: a module here, its name in
gateway.model.FACTOR_NAMES, its template under web/pages/templates/factors/, its texts,
and a line in registry.py (docs/architecture.md, "Adding a second factor")."""
