"""Tamper-evident audit log: allow-listed records, HMAC chain, file and stdout sinks, verify."""

from broker.audit.chain import GENESIS, Chain, ChainHead, VerifyReport, verify_lines
from broker.audit.log import (
    AuditLog,
    AuditWriteError,
    FileSink,
    LineSink,
    StreamSink,
    derive_audit_key,
    last_line,
)
from broker.audit.record import FIELDS, canonical

__all__ = [
    "FIELDS",
    "GENESIS",
    "AuditLog",
    "AuditWriteError",
    "Chain",
    "ChainHead",
    "FileSink",
    "LineSink",
    "StreamSink",
    "VerifyReport",
    "canonical",
    "derive_audit_key",
    "last_line",
    "verify_lines",
]
