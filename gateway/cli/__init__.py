"""The command line: main.py parses it and runs one command group module (policy, tokens,
users, keys, audit, backup, usage); output.py is how every command prints and exits,
store.py how each opens the durable store and records what an administrator did."""
