"""The names of the second factors, as policies write them: a leaf the policy loader reads
(gateway.factors.registry builds the factors themselves; a test holds the two together)."""

from __future__ import annotations

FACTOR_NAMES = ("totp", "sms", "email", "recovery")
