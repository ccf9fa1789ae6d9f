"""The daemon's reason words and the proto's ErrorReason enum name the same set of words."""

from __future__ import annotations

import inspect

import pytest

from broker import errors
from broker.rpc.audit_calls import RateLimitedError
from broker.rpc.gen import common_pb2
from broker.rpc.status import status_for

_PREFIX = "ERROR_REASON_"
_UNSPECIFIED = f"{_PREFIX}UNSPECIFIED"

ENUM_WORDS = frozenset(
    value.name.removeprefix(_PREFIX)
    for value in common_pb2.DESCRIPTOR.enum_types_by_name["ErrorReason"].values
    if value.name != _UNSPECIFIED
)
ERROR_CLASSES: tuple[type[errors.BrokerError], ...] = (
    *(
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.BrokerError)
    ),
    RateLimitedError,
)
UNKNOWN_FAILURE_REASON = status_for(RuntimeError("not a broker error"))[2]


class TestErrorReasonEnum:
    """Each word on the wire is an enum value, and each enum value is a word on the wire."""

    @pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
    def test_every_error_class_sends_an_enum_word(self, cls):
        """A reason outside the enum would reach clients that have no mapping for it."""
        assert cls.reason in ENUM_WORDS

    def test_unknown_failures_send_an_enum_word(self):
        """Exceptions that are not BrokerErrors are reported with an enum word too."""
        assert UNKNOWN_FAILURE_REASON == "INTERNAL"
        assert UNKNOWN_FAILURE_REASON in ENUM_WORDS

    def test_every_enum_value_is_sent_by_some_error(self):
        """An enum value no error sends would make every client map a word that never comes."""
        sent = {cls.reason for cls in ERROR_CLASSES} | {UNKNOWN_FAILURE_REASON}

        assert ENUM_WORDS - sent == set()
