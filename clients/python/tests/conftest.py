"""Fixtures shared by the client tests: real keybroker daemons from the shared test launcher.

The client library never imports `broker`; only these fixtures reach the daemon, through
tests/support/daemon.py (importable as `support.daemon`: pytest runs with pythonpath=tests).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import Daemon


@pytest.fixture(scope="session")
def daemon_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run `python -m broker serve --dev` in a fresh state directory; yield its socket."""
    with Daemon(tmp_path_factory.mktemp("kb") / "state", metrics=False) as daemon:
        yield daemon.socket


# Every key purpose the daemon serves, on the local backend.
KEYS_CONFIG = """
[server]
socket = "{socket}"
state_dir = "{state}"
allow_root = {allow_root}

[keys.default]
uri = "local://default"

[keys.signing]
uri = "local://signing"
purpose = "signing"

[keys.hmac]
uri = "local://hmac"
purpose = "hmac"

[keys.rsa]
uri = "local://rsa"
purpose = "asymmetric_decrypt"

[keys.derive]
uri = "local://derive"
purpose = "derivation"
"""


@pytest.fixture(scope="session")
def keys_daemon_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run the daemon from a config file with every key purpose; yield its socket.

    Keys: default (envelope), signing (ECDSA P-384), hmac (HMAC-SHA256), rsa
    (RSA-OAEP decryption) and derive (HKDF secret).
    """
    state = tmp_path_factory.mktemp("kbkeys")
    config = state / "keybroker.toml"
    # CI containers often run tests as root, which the daemon refuses unless told otherwise.
    allow_root = "true" if os.geteuid() == 0 else "false"
    socket = state / "keybroker.sock"
    config.write_text(KEYS_CONFIG.format(socket=socket, state=state, allow_root=allow_root))
    launcher = Daemon(state, config=config, dev=False, socket=socket, metrics=False)
    with launcher as daemon:
        yield daemon.socket
