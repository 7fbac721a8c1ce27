"""The package's version, in a leaf module: the registry and the CLI read it without importing the package's
front door (__init__.py), which imports them."""

__version__ = "0.1.0"
