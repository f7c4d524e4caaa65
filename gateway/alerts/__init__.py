"""Activity alerts: rules that watch the audit trail (rules.py) and count in fixed windows
in the shared store (windows.py), the alert they raise (alert.py), dedup and the record of
each delivery (dispatch.py), and the webhook and e-mail themselves (delivery.py). Never
imports the web layer: the app registers `AlertRules.observe` as a trail listener and awaits
`AlertRules.close()` on shutdown."""

from __future__ import annotations

from gateway.alerts.alert import Alert, alert_json, mail_text, signature
from gateway.alerts.delivery import AlertDelivery
from gateway.alerts.dispatch import Dispatcher
from gateway.alerts.rules import AlertRules, network_of

__all__ = [
    "Alert",
    "AlertDelivery",
    "AlertRules",
    "Dispatcher",
    "alert_json",
    "mail_text",
    "network_of",
    "signature",
]
