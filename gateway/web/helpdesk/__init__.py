"""The helpdesk console: pages of the gateway, under {prefix}admin/ on the main listener or on
the admin listener beside the metrics (`admin.console`), for administrators the policy gives
an admin role, from the admin networks, with a fresh second factor. `routes` (the table and
the one way in), `access` (who may, the refusal pages, the rate), `inputs` (what a page
reads, and bad input), `users` (search, a user's page), `actions` (unlock, revoke, reset,
new codes, forget a device), `activity` (the audit trail, charts), `ledger` (SMS costs, CSV),
`charts` (the SVG shapes), `listener` (the admin listener's own paths: metrics). Templates
are pages/templates/helpdesk/; what an action changes is gateway.admin's."""
