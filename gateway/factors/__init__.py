"""Second factors: the SecondFactor Protocol (protocol.py), one module per factor, their names
(names.py) and the registry that builds them (registry.py)."""
