"""crm-gateway: two-factor authentication, IP allowlists and access rules in front of a CRM."""

__version__ = "0.1.0"
