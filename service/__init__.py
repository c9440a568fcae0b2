"""digitserve: the service. Its version is the project's (pyproject.toml reads it from here)."""

__version__ = "0.1.0"
