"""Session-wide ordering: tests marked `last` run after every other collected test."""

from __future__ import annotations

import pytest

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
