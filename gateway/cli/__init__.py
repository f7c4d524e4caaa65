"""The command line: main.py parses it and runs one command group module (policy, tokens,
users, keys, audit, backup, sms_usage, store_commands, detect, doctor); output.py is how
every command prints and exits, store_access.py how each opens the durable store and records
what an administrator did."""

# The console script of an install made before the command line became this package named
# `gateway.cli:main`: it keeps working until the next `pip install`.
from gateway.cli.main import main

__all__ = ["main"]
