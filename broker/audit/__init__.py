"""Tamper-evident audit log: allow-listed records, HMAC chain, sinks, durable head, verify."""

from broker.audit.chain import GENESIS, Chain, ChainHead
from broker.audit.checkpoint import Checkpoint, Checkpointer, find_checkpoint, make_checkpoint
from broker.audit.head import HeadStore, Resumption, resume
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
from broker.audit.verify import Line, Repair, VerifyReport, split_lines, verify, verify_lines

__all__ = [
    "FIELDS",
    "GENESIS",
    "AuditLog",
    "AuditWriteError",
    "Chain",
    "ChainHead",
    "Checkpoint",
    "Checkpointer",
    "FileSink",
    "HeadStore",
    "Line",
    "LineSink",
    "Repair",
    "Resumption",
    "StreamSink",
    "VerifyReport",
    "canonical",
    "derive_audit_key",
    "find_checkpoint",
    "last_line",
    "make_checkpoint",
    "resume",
    "split_lines",
    "verify",
    "verify_lines",
]
