"""MediaServer gateway: the Tornado application, its config, routes and REST handlers."""

__version__ = "0.1.0"
