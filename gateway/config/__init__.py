"""gateway.yaml: read once into frozen values, every problem reported at once with its file,
line and key. load.py reads the file (its top level), sections.py the sections of the
gateway itself, process.py the workers and where the policy files are, signin.py,
messaging.py, alerts.py and shutdown.py theirs; model.py holds the values; yaml_reader.py is the
YAML reader they all use, networks.py how an address or a network is written."""
