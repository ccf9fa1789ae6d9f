"""PKCS#11 sessions and the process-wide login they share, apart from the key operations."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

    from broker.kms.pkcs11.settings import Pkcs11Settings

__all__ = ["BROKEN_SESSION", "SessionPool", "is_error", "module_lock"]

# python-pkcs11 objects (lib, token, session) are untyped here: _sdk.py imports the SDK lazily.
_Obj = Any
# python-pkcs11 errors after which a session is not trusted again: closed instead of pooled.
BROKEN_SESSION = "DeviceError DeviceRemoved SessionClosed SessionHandleInvalid TokenNotPresent"

# python-pkcs11 calls C_Initialize(NULL), telling the module that one thread calls it at a time;
# SoftHSM2 then runs without its own locks and crashes under concurrent calls. So every call
# into a loaded module, from any backend of this process, holds that module's lock, and so does
# every use of the login registry: PKCS#11 login state belongs to the process, not a session.
_MODULE_LOCKS: dict[int, threading.Lock] = {}
_LOGINS: dict[tuple[int, str], tuple[Any, int]] = {}  # (module, token) -> (login session, users)


def is_error(errors: ModuleType, exc: BaseException, names: str) -> bool:
    """Whether exc is one of the classes named (space-separated) in `errors`, pkcs11.exceptions."""
    return isinstance(exc, tuple(getattr(errors, name) for name in names.split()))


def module_lock(lib: _Obj) -> threading.Lock:
    """The lock serialising calls into one loaded PKCS#11 module."""
    return _MODULE_LOCKS.setdefault(id(lib), threading.Lock())


class SessionPool:
    """Read-write sessions on one token, opened on demand; used only under the module lock."""

    def __init__(self, lib: _Obj, settings: Pkcs11Settings, pin: str, errors: ModuleType) -> None:
        """Nothing is opened until the first call needs a session; `errors`: pkcs11.exceptions."""
        self._lib, self._token_label, self._pin = lib, settings.token_label, pin
        self._errors = errors
        self._login = (id(lib), settings.token_label)
        self.module_lock = module_lock(lib)
        self._idle: list[Any] = []
        self._logged_in = False

    def _open(self) -> _Obj:
        """Join (or make) the process's login to the token, then open a session sharing it."""
        token = self._lib.get_token(token_label=self._token_label)
        if not self._logged_in:
            login, users = _LOGINS.get(self._login, (None, 0))
            if users == 0:
                try:
                    login = token.open(user_pin=self._pin, rw=True)
                except Exception as exc:
                    if not is_error(self._errors, exc, "UserAlreadyLoggedIn"):
                        raise
                    login = None  # logged in by code outside this registry: leave it be
            _LOGINS[self._login] = (login, users + 1)
            self._logged_in = True
        return token.open(rw=True)

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """Borrow a session; one that failed badly is closed instead of returned."""
        session = self._idle.pop() if self._idle else self._open()
        broken = False
        try:
            yield session
        except Exception as exc:
            broken = is_error(self._errors, exc, BROKEN_SESSION)
            raise
        finally:
            if broken:
                with contextlib.suppress(Exception):
                    session.close()
            else:
                self._idle.append(session)

    def close(self) -> None:
        """Close idle sessions; log out when this was the last user of the login."""
        with self.module_lock:
            for session in self._idle:
                with contextlib.suppress(Exception):
                    session.close()
            self._idle.clear()
            if self._logged_in:
                self._logged_in = False
                login, users = _LOGINS.pop(self._login, (None, 0))
                if users > 1:
                    _LOGINS[self._login] = (login, users - 1)
                elif login is not None:
                    with contextlib.suppress(Exception):
                        login.close()
