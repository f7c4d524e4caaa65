"""The bundled demo: a CRM stand-in and the gateway in front of it, on loopback."""
