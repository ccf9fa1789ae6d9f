"""`[backends.pkcs11]`: which PKCS#11 module and token, and the user PIN."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from broker.errors import ConfigError

__all__ = ["SOFTHSM_PATHS", "Pkcs11Settings", "find_softhsm"]


SOFTHSM_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def find_softhsm() -> str | None:
    """The first SoftHSM2 module found in the usual Debian and /usr/local paths."""
    return next((path for path in SOFTHSM_PATHS if Path(path).is_file()), None)


@dataclass(frozen=True, slots=True)
class Pkcs11Settings:
    """`[backends.pkcs11]`: which module and token, and the user PIN (never shown in repr)."""

    token_label: str
    module: str | None = None
    pin: str | None = field(default=None, repr=False)
    pin_file: str | None = None
    pool_size: int = 2

    def __post_init__(self) -> None:
        """Reject settings that cannot work, naming the field."""
        if not self.token_label:
            raise ConfigError("backends.pkcs11.token_label must name the token")
        if (self.pin is None) == (self.pin_file is None):
            raise ConfigError("backends.pkcs11: set exactly one of pin and pin_file")
        if self.pool_size < 1:
            raise ConfigError("backends.pkcs11.pool_size must be at least 1")

    def module_path(self) -> str:
        """The configured module, else SoftHSM2 where Debian installs it."""
        path = self.module or find_softhsm()
        if path is None:
            msg = "backends.pkcs11.module is not set and no libsofthsm2.so was found"
            raise ConfigError(msg)
        return path

    def read_pin(self) -> str:
        """The PIN, from the settings or the first line of pin_file."""
        if self.pin is not None:
            return self.pin
        try:
            return Path(str(self.pin_file)).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeError, IndexError) as exc:
            msg = f"backends.pkcs11.pin_file {self.pin_file!r} is not a readable PIN file"
            raise ConfigError(msg) from exc
