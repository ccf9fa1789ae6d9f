from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from daemon import Daemon

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One dev daemon shared by a test module."""
    d = Daemon(tmp_path_factory.mktemp("kb") / "state").start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.kill()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory for daemons with their own environment; all stopped after the test."""
    started: list[Daemon] = []

    def make(env: dict[str, str] | None = None, name: str = "state") -> Daemon:
        d = Daemon(tmp_path / name, env)
        started.append(d)
        return d

    yield make
    for d in started:
        try:
            d.stop()
        finally:
            d.kill()
