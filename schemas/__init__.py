"""Makes `schemas/` the data package `scimjit._schemas` (see setup.py): never imported for code, only so that
`importlib.resources.files("scimjit._schemas")` finds the JSON files in a wheel and an editable install alike."""
