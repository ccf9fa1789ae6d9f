"""Session-wide hooks: tests marked `last` run last; each test starts with the same logging."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import structlog

if TYPE_CHECKING:
    from collections.abc import Iterator

LAST = "last"


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker, so that --strict-markers accepts it."""
    config.addinivalue_line(
        "markers", f"{LAST}: runs after every other test (it checks what they left behind)"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move marked tests to the end, after pytest's own reordering, keeping their order."""
    marked = [item for item in items if item.get_closest_marker(LAST) is not None]
    items[:] = [item for item in items if item.get_closest_marker(LAST) is None] + marked


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """The command line configures logging when a test runs it in-process; undo that after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
