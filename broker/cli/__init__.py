"""The `keybroker` command line: one module per command group."""

from broker.cli.entry import main

__all__ = ["main"]
