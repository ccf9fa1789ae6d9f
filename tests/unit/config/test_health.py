"""`[health]`: how often the daemon probes its KMS backends, from a file or the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from broker.config.load import load_config
from broker.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

KEY = '[keys.default]\nuri = "local://default"\n'


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keybroker.toml"
    path.write_text(KEY + text)
    return path


class TestHealthSection:
    """Probe interval and timeout: defaults, overrides and bounds."""

    def test_defaults(self, tmp_path):
        """Probes every 10 seconds, each cut after 5, unless configured."""
        cfg = load_config(_file(tmp_path, ""), env={})
        assert (cfg.health.probe_seconds, cfg.health.timeout_seconds) == (10.0, 5.0)

    def test_file_then_environment(self, tmp_path):
        """The file sets both; KEYBROKER_HEALTH_* win over it; 0 turns probes off."""
        path = _file(tmp_path, "[health]\nprobe_seconds = 30\ntimeout_seconds = 2\n")
        assert load_config(path, env={}).health.probe_seconds == 30.0
        env = {"KEYBROKER_HEALTH_PROBE_SECONDS": "0", "KEYBROKER_HEALTH_TIMEOUT_SECONDS": "1.5"}
        cfg = load_config(path, env=env)
        assert (cfg.health.probe_seconds, cfg.health.timeout_seconds) == (0.0, 1.5)

    @pytest.mark.parametrize(
        ("text", "env", "message"),
        [
            ("[health]\nprobe_seconds = -1\n", {}, r"health\.probe_seconds: must be between 0"),
            (
                "",
                {"KEYBROKER_HEALTH_TIMEOUT_SECONDS": "0"},
                (
                    r"health\.timeout_seconds: must be between 0\.1 and 300 "
                    r"\(set in KEYBROKER_HEALTH_TIMEOUT_SECONDS\)"
                ),
            ),
            ("[health]\ninterval = 3\n", {}, r"health\.interval: unknown setting"),
        ],
    )
    def test_refused(self, tmp_path, text, env, message):
        """Out-of-range or unknown settings fail with one line naming the field."""
        with pytest.raises(ConfigError, match=message):
            load_config(_file(tmp_path, text), env=env)
