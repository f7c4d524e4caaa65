"""policies/*.yaml and what they decide: load.py reads and merges the files (values.py one
setting's value, checks.py the checks of the whole), model.py holds the frozen Policy,
rules.py the resolution rules (addresses, paths, settings), networks.py the address index,
paths.py the path normalisation and patterns, tokens.py API credentials, view.py the policy
in force as one value, change.py what a reload changes, live.py keeping it current."""
