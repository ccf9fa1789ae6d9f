"""The server's slot, deadline and memory settings: defaults, environment names and bounds."""

from __future__ import annotations

import pytest

from broker.config.load import load_config
from broker.errors import ConfigError

ENV = {
    "KEYBROKER_MAX_CONCURRENT_RPCS": ("max_concurrent_rpcs", "64", 64),
    "KEYBROKER_MAX_STREAMS_PER_CONNECTION": ("max_streams_per_connection", "8", 8),
    "KEYBROKER_FIRST_MESSAGE_SECONDS": ("first_message_seconds", "2.5", 2.5),
    "KEYBROKER_STREAM_IDLE_SECONDS": ("stream_idle_seconds", "5", 5.0),
    "KEYBROKER_MAX_INFLIGHT_PER_CALLER": ("max_inflight_per_caller", "3", 3),
    "KEYBROKER_REQUEST_MEMORY_BYTES": ("request_memory_bytes", "33554432", 32 << 20),
}


class TestServerLimits:
    """server.* limits load from the environment and are checked against their bounds."""

    @pytest.mark.parametrize("name", sorted(ENV))
    def test_environment_sets_each_limit(self, name: str) -> None:
        """Each KEYBROKER_* name sets its server field."""
        field, raw, value = ENV[name]
        cfg = load_config(env={name: raw}, dev=True)
        assert getattr(cfg.server, field) == value

    @pytest.mark.parametrize(
        ("name", "raw", "message"),
        [
            ("KEYBROKER_FIRST_MESSAGE_SECONDS", "0", "server.first_message_seconds: must be"),
            ("KEYBROKER_STREAM_IDLE_SECONDS", "0", "server.stream_idle_seconds: must be"),
            ("KEYBROKER_MAX_STREAMS_PER_CONNECTION", "0", "server.max_streams_per_connection"),
            ("KEYBROKER_REQUEST_MEMORY_BYTES", "1024", "server.request_memory_bytes: must be"),
            ("KEYBROKER_MAX_INFLIGHT_PER_CALLER", "-1", "server.max_inflight_per_caller"),
        ],
    )
    def test_out_of_bounds_is_refused(self, name: str, raw: str, message: str) -> None:
        """A value outside its bounds fails at start, naming the field."""
        with pytest.raises(ConfigError, match=message):
            load_config(env={name: raw}, dev=True)
