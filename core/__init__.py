"""Leaf modules every layer may use: the settings and the metrics.

They import nothing of the project, so they sit below every layer
(the import-linter contracts in pyproject.toml keep them there)."""
