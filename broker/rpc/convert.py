"""Conversions between protobuf messages and service values that several servicers share."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from broker.rpc.gen import common_pb2, key_admin_pb2
from broker.rpc.status import status_for

if TYPE_CHECKING:
    from broker.errors import BrokerError
    from broker.kms.base import KeyVersionInfo
    from broker.services.admin import KeyDescription

__all__ = ["item_error", "key_message", "timestamp", "version_message"]

_PURPOSES = {
    "envelope": key_admin_pb2.KEY_PURPOSE_ENVELOPE,
    "signing": key_admin_pb2.KEY_PURPOSE_SIGNING,
    "hmac": key_admin_pb2.KEY_PURPOSE_HMAC,
    "asymmetric_decrypt": key_admin_pb2.KEY_PURPOSE_ASYMMETRIC_DECRYPT,
    "derivation": key_admin_pb2.KEY_PURPOSE_DERIVATION,
}
_STATES = {
    "enabled": key_admin_pb2.KEY_VERSION_STATE_ENABLED,
    "disabled": key_admin_pb2.KEY_VERSION_STATE_DISABLED,
}


def item_error(exc: BrokerError) -> common_pb2.ItemError:
    """A batch item's error, with the same code, reason and message a unary call would get."""
    code, message, reason = status_for(exc)
    return common_pb2.ItemError(code=code.value[0], reason=reason, message=message)


def timestamp(moment: datetime | float | None) -> Timestamp | None:
    """A protobuf Timestamp from a datetime or epoch seconds."""
    if moment is None:
        return None
    ts = Timestamp()
    if isinstance(moment, datetime):
        ts.FromDatetime(moment)
    else:
        ts.FromNanoseconds(int(moment * 1e9))
    return ts


def version_message(info: KeyVersionInfo) -> key_admin_pb2.KeyVersion:
    """One key version."""
    return key_admin_pb2.KeyVersion(
        version=info.version, state=_STATES[info.state], create_time=timestamp(info.created)
    )


def key_message(desc: KeyDescription) -> key_admin_pb2.Key:
    """A logical key's description; never material."""
    bk = desc.backend_key
    return key_admin_pb2.Key(
        name=desc.name,
        uri=desc.uri,
        backend=desc.backend,
        purpose=_PURPOSES.get(desc.purpose, key_admin_pb2.KEY_PURPOSE_UNSPECIFIED),
        algorithm=bk.algorithm,
        current_version=bk.current_version,
        versions=[version_message(v) for v in bk.versions],
        rotatable=bk.rotatable,
    )
