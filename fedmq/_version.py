"""The package version: defined here once, read by setup.cfg, ``fedmq.__version__`` and the docs."""

__version__ = "0.1.0.dev0"
