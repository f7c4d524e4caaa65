"""What an administrator does and reads, written once for the command line (gateway.cli) and
the helpdesk console (gateway.web.helpdesk): `accounts` (one user's state and the changes
made to it: unlock requests, sessions revoked, two-step verification reset, new recovery
codes, a device forgotten), `explain` (a user's settings, networks and the decision for a
request, with the rules that made them), `trail` (audit-search criteria read from text),
`ledger` (the SMS bill of a quarter). No HTTP and no printing: callers present the results
and record the audit event, each with the administrator's name."""
