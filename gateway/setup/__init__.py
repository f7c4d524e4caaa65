"""Putting the gateway in front of a CRM it has never seen: what `crm-gateway detect-login`
and `crm-gateway doctor` know. The CRM is looked at from outside, as a browser meets it, over
HTTP; nothing here changes the deployment beyond one audit line (doctor's write check).

- html.py      a page read into forms, fields, links and scripts (no I/O)
- forms.py     which form is a login, which field names the user, where logout is (no I/O)
- scripts.py   a JSON login API found in a page's scripts (no I/O)
- client.py    the browser: requests, redirects on one site, cookies, every answer kept
- attempt.py   finding the login from a start page, and one login through it
- signals.py   what tells a right password from a wrong one, from two answers (no I/O)
- detect.py    detect-login: find, try a right and a wrong password, find logout
- section.py   the `login:` section, each value with how it was found
- checks.py    doctor's checks of the deployment itself: key files, public_url, stores
- compare.py   doctor's verdicts on what was seen of the CRM: clock, login, redirects, cookies
- trial.py     a gateway of this config on a loopback port, and a login through it
- doctor.py    doctor: every check, a verdict and a fix each
"""
