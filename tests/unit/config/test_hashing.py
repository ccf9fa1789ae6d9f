"""The `[hashing]` section: the password-hashing work pool's budget."""

from __future__ import annotations

import pytest

from broker.config import HashingConfig, load_config
from broker.errors import ConfigError

KEY = '[keys.default]\nuri = "local://default"\n'


class TestHashingSection:
    """[hashing] max_concurrent and memory_budget_bytes, from the file or KEYBROKER_*."""

    def test_defaults(self, tmp_path):
        """256 MiB and a job count derived from it (0)."""
        path = tmp_path / "k.toml"
        path.write_text(KEY)
        assert load_config(path, env={}).hashing == HashingConfig(0, 256 << 20)

    def test_file_then_env(self, tmp_path):
        """The file sets both; KEYBROKER_HASHING_* overrides."""
        path = tmp_path / "k.toml"
        path.write_text(KEY + "[hashing]\nmax_concurrent = 2\nmemory_budget_bytes = 134217728\n")
        assert load_config(path, env={}).hashing == HashingConfig(2, 128 << 20)
        env = {"KEYBROKER_HASHING_MEMORY_BUDGET_BYTES": str(1 << 30)}
        assert load_config(path, env=env).hashing.memory_budget_bytes == 1 << 30

    def test_share_and_cost_maxima(self, tmp_path):
        """The caller share and the hash-string cost maxima, from the file."""
        path = tmp_path / "k.toml"
        path.write_text(
            KEY + "[hashing]\nmax_share_per_caller = 1\nmax_memory_kib = 262144\n"
            "max_time_cost = 10\nmax_parallelism = 16\n"
        )
        assert load_config(path, env={}).hashing == HashingConfig(
            max_share_per_caller=1.0, max_memory_kib=262144, max_time_cost=10, max_parallelism=16
        )

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ("memory_budget_bytes = 1048576", "hashing.memory_budget_bytes: must be between"),
            ("max_concurrent = 1000", "hashing.max_concurrent: must be between 0 and 256"),
            ("threads = 4", "hashing.threads: unknown setting"),
            (
                "max_share_per_caller = 0",
                "hashing.max_share_per_caller: must be between 0.01 and 1",
            ),
            ("max_memory_kib = 32768", "hashing.max_memory_kib: must be between 65536 and 262144"),
            ("max_time_cost = 2", "hashing.max_time_cost: must be between 3 and 10"),
            ("max_parallelism = 17", "hashing.max_parallelism: must be between 4 and 16"),
        ],
    )
    def test_errors_name_the_field(self, tmp_path, line, message):
        """A budget under one hash, an absurd job count or a typo stop the start, naming it."""
        path = tmp_path / "k.toml"
        path.write_text(KEY + f"[hashing]\n{line}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path, env={})
