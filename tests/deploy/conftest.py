from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

import pytest
from deploy.manifests import parse_dockerfile
from deploy.sandbox import Account, account, add_user, remove_tree, remove_user, sh, short_dir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from integration.kms.servers import MotoServer


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating OS users and mount namespaces needs root; run the suite as root")


def _dockerfile_account_commands() -> list[list[str]]:
    """The groupadd/useradd commands of the runtime stage, exactly as the image runs them."""
    stage = parse_dockerfile().stage("runtime")
    return [c for c in stage.run_commands() if c and c[0] in ("groupadd", "useradd")]


@pytest.fixture
def as_root() -> None:
    """Skip unless the suite runs as root (chown to other users, mount namespaces)."""
    _needs_root()


@pytest.fixture(scope="session")
def image_user() -> Iterator[Account]:
    """The image's `keybroker` account (uid 10001), made with the Dockerfile's own commands.

    An existing account of that name is used as it is and kept; one made here is removed.
    """
    _needs_root()
    commands = _dockerfile_account_commands()
    name = commands[-1][-1]
    try:
        existing = account(name)
    except KeyError:
        existing = None
    if existing is not None:
        yield existing
        return
    for command in commands:
        sh(*command)
    made = account(name, created=True)
    try:
        yield made
    finally:
        remove_user(made)


@pytest.fixture(scope="session")
def app_user(image_user: Account) -> Iterator[Account]:
    """An application account in the group keybroker (as a pod's fsGroup, or sysusers `m`)."""
    user = add_user(f"kbapp{secrets.token_hex(3)}", groups=(image_user.name,))
    try:
        yield user
    finally:
        remove_user(user)


@pytest.fixture(scope="session")
def outsider(image_user: Account) -> Iterator[Account]:
    """An account outside the group keybroker."""
    del image_user  # only ordered after it
    user = add_user(f"kbout{secrets.token_hex(3)}")
    try:
        yield user
    finally:
        remove_user(user)


@pytest.fixture
def base() -> Iterator[Path]:
    """A short scratch directory under /tmp, removed afterwards."""
    path = short_dir("kbd")
    try:
        yield path
    finally:
        remove_tree(path)


@pytest.fixture(scope="class")
def class_base() -> Iterator[Path]:
    """A short scratch directory shared by one test class."""
    path = short_dir("kbc")
    try:
        yield path
    finally:
        remove_tree(path)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto_server (AWS KMS and STS APIs) for the deployment tests."""
    from integration.kms.servers import MotoServer  # noqa: PLC0415 - only the live tests need it

    with MotoServer() as server:
        yield server
