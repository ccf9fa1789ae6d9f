import json
import logging

import pytest

from keybroker_client.compat import audit, log_kms_operation


@pytest.fixture
def entries(caplog):
    """The audit records logged during the test, as (level, parsed JSON)."""
    caplog.set_level(logging.INFO, logger="ecl_crypto_utility.audit")

    def read():
        return [
            (r.levelno, json.loads(r.getMessage()))
            for r in caplog.records
            if r.name == "ecl_crypto_utility.audit"
        ]

    return read


class TestLogKmsOperation:
    """One JSON entry per operation on the seed's logger."""

    def test_success_entry(self, entries):
        """Success logs at INFO with the seed's fields and a UTC ISO 8601 timestamp."""
        log_kms_operation(
            operation="encrypt_dek", key_id="k", backend_type="AWSKMSBackend", success=True
        )

        [(level, entry)] = entries()
        assert level == logging.INFO
        assert sorted(entry) == ["backend", "key_id", "operation", "success", "timestamp"]
        assert (entry["operation"], entry["key_id"], entry["backend"]) == (
            "encrypt_dek",
            "k",
            "AWSKMSBackend",
        )
        assert entry["success"] is True
        assert entry["timestamp"].endswith("+00:00")

    def test_failure_entry_with_metadata(self, entries):
        """Failure logs at ERROR and keeps the metadata (with its error)."""
        log_kms_operation("decrypt_dek", "k", "LocalKMSBackend", False, {"error": "boom"})  # noqa: FBT003 - the seed's positional form

        [(level, entry)] = entries()
        assert level == logging.ERROR
        assert entry["success"] is False
        assert entry["metadata"] == {"error": "boom"}

    def test_logger_name_is_the_seeds(self):
        """Handlers attached to ecl_crypto_utility.audit receive the entries."""
        assert audit.audit_logger is logging.getLogger("ecl_crypto_utility.audit")

    def test_entry_is_also_structured(self, caplog):
        """Structured handlers find the entry as a dict on the record."""
        caplog.set_level(logging.INFO, logger="ecl_crypto_utility.audit")

        log_kms_operation(
            "generate_dek", "k", "B", success=True, metadata={"request_id": "abc-123"}
        )

        assert caplog.records[-1].audit_entry["metadata"] == {"request_id": "abc-123"}
