"""A SoftHSM2 token for the tests: a private token directory, initialised once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import pkcs11
import pytest

from broker.kms.pkcs11 import Pkcs11Settings, find_softhsm

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TOKEN_LABEL = "test"  # noqa: S105 - a token label, not a secret
PIN = "1234"
SO_PIN = "5678"
INSTALL_HINT = "SoftHSM2 is missing: run scripts/install-softhsm.sh (Debian package softhsm2)"


class SoftHsm:
    """A SoftHSM2 token initialised for this test session, and its module path."""

    def __init__(self, module: str, lib: object) -> None:
        """Remember what the fixture set up."""
        self.module = module
        self.lib = lib

    def settings(self, **overrides: object) -> Pkcs11Settings:
        """Settings for the test token, with the test PIN unless overridden."""
        values: dict[str, object] = {"token_label": TOKEN_LABEL, "module": self.module, "pin": PIN}
        values.update(overrides)
        return Pkcs11Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A fresh token `test` (PIN 1234) in a private token directory; fails if SoftHSM2 is absent."""
    util = shutil.which("softhsm2-util")
    module = find_softhsm()
    if util is None or module is None:
        pytest.fail(INSTALL_HINT)
    root: Path = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    init = [
        util,
        "--init-token",
        "--free",
        "--label",
        TOKEN_LABEL,
        "--pin",
        PIN,
        "--so-pin",
        SO_PIN,
    ]
    subprocess.run(init, check=True, capture_output=True)
    lib = pkcs11.lib(module)
    try:
        lib.get_token(token_label=TOKEN_LABEL)
    except pkcs11.exceptions.NoSuchToken:
        lib.reinitialize()  # loaded earlier in this process under another token directory
    yield SoftHsm(module, lib)
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous
