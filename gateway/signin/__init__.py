"""Signing in, apart from HTTP: decision.py is the one Decision (how the verification
interval, the factors on offer and every deny are decided), session.py the gateway's
sessions, regulation.py the limits on guesses, identity.py recognising the CRM's own login,
passwords.py gateway mode's users file."""
