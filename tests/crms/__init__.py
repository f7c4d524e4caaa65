"""CRMs of the shapes real ones take, built for `crm-gateway detect-login` and `doctor`
(tests/flows/test_detect_login.py, test_doctor.py): each an aiohttp app served on 127.0.0.1:0
that knows nothing about the gateway.

- php_crm.py       SugarCRM-like: index.php?action=…, PHPSESSID, absolute redirects
- json_crm.py      a single-page app: no form in the page, a JSON login API, a token cookie
- two_step_crm.py  the user name first, then a password page that carries it
- origin_crm.py    a CSRF check that compares Origin with Host (a rewritten Host fails it)
- quirks.py        what detect-login must refuse: 500, no form, two forms, no answer
- common.py        serving one with its own address known, a clock set wrong
"""
