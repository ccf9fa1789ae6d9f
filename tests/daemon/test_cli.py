"""The `keybroker` command line against a real daemon."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _kb(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


class TestCli:
    """encrypt, decrypt, healthcheck and config check."""

    def test_round_trip_text(self, daemon):
        """Piping encrypt into decrypt with a context gives the input back, as base64 text."""
        sock = str(daemon.socket)
        enc = _kb("encrypt", "--socket", sock, "--context", "tenant=a", stdin=b"hello")
        assert enc.returncode == 0, enc.stderr
        assert enc.stdout.strip().isascii()
        dec = _kb(
            "decrypt", "--context", "tenant=a", stdin=enc.stdout, env={"KEYBROKER_SOCKET": sock}
        )
        assert (dec.returncode, dec.stdout) == (0, b"hello")

    def test_large_binary_streams(self, daemon):
        """Input above the unary limit is streamed, in binary mode."""
        data = os.urandom(5 * (1 << 20))
        enc = _kb("encrypt", "--socket", str(daemon.socket), "--binary", stdin=data)
        assert enc.returncode == 0, enc.stderr
        assert enc.stdout[0] == 2
        dec = _kb("decrypt", "--socket", str(daemon.socket), "--binary", stdin=enc.stdout)
        assert dec.stdout == data

    def test_wrong_context(self, daemon):
        """A wrong context exits 1 with the fixed message."""
        enc = _kb("encrypt", "--socket", str(daemon.socket), "--context", "t=1", stdin=b"x")
        dec = _kb("decrypt", "--socket", str(daemon.socket), "--context", "t=2", stdin=enc.stdout)
        assert dec.returncode == 1
        assert b"ciphertext could not be decrypted" in dec.stderr

    def test_healthcheck(self, daemon, tmp_path):
        """0 and SERVING against a daemon, 1 and a hint when none runs."""
        ok = _kb("healthcheck", "--socket", str(daemon.socket))
        assert (ok.returncode, ok.stdout.strip()) == (0, b"SERVING")
        down = _kb("healthcheck", "--socket", str(tmp_path / "none.sock"))
        assert down.returncode == 1
        assert b"is `keybroker serve` running?" in down.stderr

    @pytest.mark.parametrize(
        ("text", "code", "out"),
        [
            ('[keys.default]\nuri = "local://default"\n', 0, b"ok (1 keys"),
            (
                '[keys.default]\nuri = "local://default"\n[cache]\nencrypt_max_messages = -1\n',
                2,
                b"cache.encrypt_max_messages",
            ),
        ],
    )
    def test_config_check(self, tmp_path, text, code, out):
        """`config check` validates without starting anything."""
        path = tmp_path / "k.toml"
        path.write_text(text)
        result = _kb("config", "check", str(path))
        assert result.returncode == code
        assert out in result.stdout + result.stderr

    @pytest.mark.parametrize(
        ("uri", "table", "line"),
        [
            (
                "local://default",
                'adress = "x"\n',
                "keybroker: backends.vault.adress: unknown setting (known: address, ",
            ),
            (
                "vault-transit://transit/k",
                'timeout = "ten"\n',
                "keybroker: backends.vault.timeout: expected float",
            ),
        ],
    )
    def test_config_check_refuses_what_serve_refuses(self, tmp_path, uri, table, line):
        """A wrong backend field: `config check` and `serve` exit 2 with the same one line."""
        path = tmp_path / "k.toml"
        path.write_text(
            f'[keys.default]\nuri = "{uri}"\n'
            f'[backends.vault]\naddress = "http://127.0.0.1:8200"\n{table}'
        )
        check = _kb("config", "check", str(path))
        serve = _kb("serve", "--dev", "--config", str(path), "--state-dir", str(tmp_path / "s"))
        lines = [r.stderr.decode().splitlines() for r in (check, serve)]
        assert (check.returncode, serve.returncode) == (2, 2)
        assert lines[0] == [ln for ln in lines[1] if ln.startswith("keybroker:")]
        assert len(lines[0]) == 1
        assert lines[0][0].startswith(line)

    @pytest.mark.parametrize(
        ("host", "cause"),
        [("127.0.0.1", "Address already in use"), ("192.0.2.1", "Cannot assign requested")],
        ids=["in-use", "not-this-host"],
    )
    def test_metrics_address_that_cannot_be_bound(self, tmp_path, host, cause):
        """`serve` exits 2 with one line naming metrics.listen, before any socket is bound."""
        state = tmp_path / "s"
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            listen = f"{host}:{taken.getsockname()[1]}"
            env = {"KEYBROKER_METRICS_LISTEN": listen}
            result = _kb("serve", "--dev", "--state-dir", str(state), env=env)
        assert result.returncode == 2, result.stderr
        lines = [ln for ln in result.stderr.decode().splitlines() if not ln.startswith("{")]
        assert len(lines) == 1, lines  # the JSON log records aside, one line and no traceback
        assert lines[0].startswith(f"keybroker: metrics.listen: cannot listen on {listen}: {cause}")
        assert not (state / "keybroker.sock").exists()


# The seed README's example .env files, as it shows them.
SEED_ENV_FILES = {
    "aws": (
        (
            "ECL_CRYPTO_KMS_BACKEND=aws\n"
            "ECL_CRYPTO_KMS_KEY_ID=arn:aws:kms:us-east-1:123456789012:key/abcd-1234\n"
            "ECL_CRYPTO_AWS_REGION=us-east-1\n"
        ),
        (
            "  key default: envelope, aws-kms://arn:aws:kms:us-east-1:123456789012:key/abcd-1234 "
            "(backend aws: region=us-east-1)"
        ),
    ),
    "gcp": (
        (
            "ECL_CRYPTO_KMS_BACKEND=gcp\n"
            "ECL_CRYPTO_KMS_KEY_ID=my-crypto-key\n"
            "ECL_CRYPTO_GCP_PROJECT_ID=my-project\n"
            "ECL_CRYPTO_GCP_LOCATION_ID=us-east1\n"
            "ECL_CRYPTO_GCP_KEY_RING_ID=my-keyring\n"
        ),
        (
            "  key default: envelope, gcp-kms://projects/my-project/locations/us-east1/"
            "keyRings/my-keyring/cryptoKeys/my-crypto-key (backend gcp)"
        ),
    ),
    "vault": (
        (
            "ECL_CRYPTO_KMS_BACKEND=vault\n"
            "ECL_CRYPTO_KMS_KEY_ID=my-transit-key\n"
            "ECL_CRYPTO_VAULT_URL=https://vault.example.com:8200\n"
            "ECL_CRYPTO_VAULT_TOKEN=hvs.my-vault-token\n"
        ),
        (
            "  key default: envelope, vault-transit://transit/my-transit-key "
            "(backend vault: address=https://vault.example.com:8200)"
        ),
    ),
    "local": (
        "ECL_CRYPTO_KMS_BACKEND=local\nECL_CRYPTO_KMS_KEY_ID=dev-key\n",
        "  key default: envelope, local://dev-key (backend local)",
    ),
}


def _kb_seed_env(*args: str, env_file: str) -> subprocess.CompletedProcess[str]:
    """Run `keybroker ARGS` with a .env file's variables and no other keybroker settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECL_CRYPTO_", "KEYBROKER_"))}
    env.update(line.split("=", 1) for line in env_file.splitlines() if line)
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


class TestConfigCheckSeedEnv:
    """`config check` without a file checks the seed's variables and says what they configure."""

    @pytest.mark.parametrize("backend", sorted(SEED_ENV_FILES))
    def test_seed_env_file(self, backend):
        """Each example .env of the seed gives the key and backend it means, with no warning."""
        env_file, line = SEED_ENV_FILES[backend]

        result = _kb_seed_env("config", "check", env_file=env_file)

        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1:] == [line]
        assert result.stderr == ""
        assert "hvs." not in result.stdout

    def test_unknown_name_is_a_warning(self):
        """A misspelt ECL_CRYPTO_* name is reported on stderr; the exit code stays 0."""
        env_file = SEED_ENV_FILES["vault"][0].replace("_VAULT_URL=", "_VAULT_ADDRESS=")
        env_file += "ECL_CRYPTO_VAULT_ADDR=https://vault.example.com:8200\n"

        result = _kb_seed_env("config", "check", env_file=env_file)

        assert result.returncode == 0
        assert result.stderr == (
            "keybroker: warning: ECL_CRYPTO_VAULT_ADDRESS: unknown variable, ignored; "
            "did you mean ECL_CRYPTO_VAULT_ADDR?\n"
        )

    def test_warning_keeps_the_error_exit_code(self):
        """With an invalid setup as well, the warning comes first and the exit code is still 2."""
        env_file = "ECL_CRYPTO_KMS_BACKEND=gcp\nECL_CRYPTO_KMS_KEY_ID=k\nECL_CRYPTO_GCP_RING=r\n"

        result = _kb_seed_env("config", "check", env_file=env_file)

        assert result.returncode == 2
        warning, error = result.stderr.splitlines()
        assert warning.startswith("keybroker: warning: ECL_CRYPTO_GCP_RING: unknown variable")
        assert error.startswith("keybroker: ECL_CRYPTO_GCP_PROJECT_ID: required when")
