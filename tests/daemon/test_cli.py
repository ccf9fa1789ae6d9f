"""The `keybroker` command line against a real daemon."""

from __future__ import annotations

import os
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
