"""Load a vendor SDK on first use, so the daemon installs and starts without every extra."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from broker.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["import_extra", "import_sdk"]


def import_extra(module: str, extra: str) -> ModuleType:
    """Import `module`, or fail with a one-line fix naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"the Python module {module!r} is missing: install keybroker[{extra}]"
        raise ConfigError(msg) from exc


def import_sdk(extra: str, *modules: str) -> tuple[ModuleType, ...]:
    """Import every module a vendor needs at once, failing on the first with import_extra's fix."""
    return tuple(import_extra(module, extra) for module in modules)
