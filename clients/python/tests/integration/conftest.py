"""Daemons set up as the ecl_crypto_utility README describes, for the compat tests.

`quickstart_daemon_socket` is configured by the README's Quick Start exports alone (no file):
it serves `local://my-app-key` as `default`. `seed_daemon_socket` serves the keys the
README's other examples name: `local://dev-key` (as `dev`) and the AWS key
`arn:aws:kms:us-east-1:123456789012:key/abcd-1234` (as `payments`) on a moto server.
`kms_seed_daemon` serves keys whose ciphertexts do decrypt, on a moto_server process, an
OpenBao dev server and the in-test Cloud KMS server, for migrating envelopes the seed sealed
under AWS KMS, Vault transit and Cloud KMS.

Moto gives keys random ids, so the README's literal ARN is made by running moto in this
process and fixing the id of the one key it creates. Moto packs a key id into its
ciphertexts as 36 bytes, so that key encrypts but its ciphertexts do not decrypt in moto;
the README only encrypts with it.
"""

import os
import re
import socket as socketlib
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
from integration.kms.gcp_server import GcpKmsServer
from integration.kms.openbao import OpenBaoServer, start_openbao
from integration.kms.servers import MotoServer, start_moto
from support.daemon import Daemon

from keybroker_client import _facade
from keybroker_client.compat import _autoconfig

SEED_AWS_KEY_ID = "abcd-1234"
SEED_AWS_ARN = f"arn:aws:kms:us-east-1:123456789012:key/{SEED_AWS_KEY_ID}"
GCP_SEED_KEY = "projects/p/locations/global/keyRings/r/cryptoKeys/legacy"
QUICK_START_ENV = {"ECL_CRYPTO_KMS_BACKEND": "local", "ECL_CRYPTO_KMS_KEY_ID": "my-app-key"}

SEED_KEYS_CONFIG = """
[server]
socket = "{socket}"
state_dir = "{state}"
allow_root = {allow_root}

[keys.default]
uri = "local://my-app-key"

[keys.dev]
uri = "local://dev-key"

[keys.payments]
uri = "aws-kms://{arn}"

[backends.aws]
region = "us-east-1"
endpoint_url = "{moto}"
access_key_id = "testing"
secret_access_key = "testing"
"""


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socketlib.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _allow_root() -> str:
    """CI containers often run tests as root, which the daemon refuses unless told."""
    return "true" if os.geteuid() == 0 else "false"


@pytest.fixture(scope="session")
def seed_aws_kms() -> Iterator[str]:
    """An in-process moto server holding the README's AWS key; yields its URL."""
    boto3 = pytest.importorskip("boto3")
    from moto.kms import models  # noqa: PLC0415 - moto only for these tests
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - idem

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        kms = boto3.client(
            "kms",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
        )
        with mock.patch.object(models, "generate_key_id", return_value=SEED_AWS_KEY_ID):
            arn = kms.create_key(KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]["Arn"]
        assert arn == SEED_AWS_ARN
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seed_daemon_socket(
    tmp_path_factory: pytest.TempPathFactory, seed_aws_kms: str
) -> Iterator[Path]:
    """A daemon serving the README's keys: default, dev (local://dev-key), payments (AWS)."""
    state = tmp_path_factory.mktemp("kbseed")
    socket = state / "keybroker.sock"
    config = state / "keybroker.toml"
    config.write_text(
        SEED_KEYS_CONFIG.format(
            socket=socket,
            state=state,
            allow_root=_allow_root(),
            arn=SEED_AWS_ARN,
            moto=seed_aws_kms,
        )
    )
    config.chmod(0o600)
    with Daemon(state, config=config, dev=False, socket=socket, metrics=False) as daemon:
        yield daemon.socket


@pytest.fixture(scope="session")
def quickstart_daemon_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A daemon configured only by the README's Quick Start variables."""
    state = tmp_path_factory.mktemp("kbquick")
    socket = state / "keybroker.sock"
    env = {**QUICK_START_ENV, "KEYBROKER_ALLOW_ROOT": _allow_root()}
    launcher = Daemon(state, env=env, dev=False, socket=socket, metrics=False)
    launcher.start("--state-dir", str(state), "--socket", str(socket))
    with launcher as daemon:
        yield daemon.socket


KMS_SEED_CONFIG = """
[server]
state_dir = "{state}"
allow_root = {allow_root}
max_plaintext_bytes = 65536

[[listeners]]
kind = "unix"
path = "{run}/migrator.sock"
mode = "0600"
identity = "migrator"

[[listeners]]
kind = "unix"
path = "{run}/other.sock"
mode = "0600"
identity = "other"

[keys.legacy-aws]
uri = "aws-kms://{aws_arn}"

[keys.second-vault]
uri = "vault-transit://{second_vault_key}"

[keys.legacy-vault]
uri = "vault-transit://{vault_key}"

[keys.legacy-gcp]
uri = "gcp-kms://{gcp_key}"

[keys.records]
uri = "local://records"

[backends.aws]
region = "us-east-1"
endpoint_url = "{moto}"
access_key_id = "testing"
secret_access_key = "testing"

[backends.vault]
address = "{bao}"
token = "{token}"

[backends.gcp]
endpoint = "{gcp}"

[[policy.rules]]
id = "migrator-all"
callers = ["migrator"]
keys = ["*"]
operations = ["*"]

[[policy.rules]]
id = "other-seals-records"
callers = ["other"]
keys = ["records"]
operations = ["encrypt"]
"""


class KmsSeedDaemon:
    """A daemon over moto_server, OpenBao and the Cloud KMS test server, with two callers.

    `migrator.sock` may do anything; `other.sock` may only encrypt under `records`.
    """

    def __init__(self, root: Path) -> None:
        """Start the servers, make the keys, start the daemon."""
        self.moto: MotoServer = start_moto()
        self.gcp = GcpKmsServer().start()
        self.bao: OpenBaoServer | None = None
        try:
            self.bao = start_openbao()
            self.gcp.create_key(GCP_SEED_KEY)
            self.aws_arn = self.moto.create_key()
            self.vault_key = self.bao.create_key("legacy")
            self.second_vault_key = self.bao.create_key("second")
            run = root / "run"
            run.mkdir()
            self.socket, self.other_socket = run / "migrator.sock", run / "other.sock"
            self.daemon = Daemon(
                root / "state",
                config=self._config(root, run),
                dev=False,
                socket=self.socket,
                metrics=False,
            ).start()
        except BaseException:
            self.stop_servers()
            raise

    def _config(self, root: Path, run: Path) -> Path:
        """The configuration file, readable by its owner only."""
        assert self.bao is not None
        config = root / "keybroker.toml"
        config.write_text(
            KMS_SEED_CONFIG.format(
                state=root / "state",
                run=run,
                allow_root=_allow_root(),
                aws_arn=self.aws_arn,
                vault_key=self.vault_key,
                second_vault_key=self.second_vault_key,
                moto=self.moto.url,
                bao=self.bao.url,
                token=self.bao.root_token,
                gcp_key=GCP_SEED_KEY,
                gcp=self.gcp.endpoint,
            )
        )
        config.chmod(0o600)
        return config

    def stop_servers(self) -> None:
        """Stop the KMS servers."""
        self.moto.close()
        self.gcp.stop()
        if self.bao is not None:
            self.bao.close()

    def close(self) -> None:
        """Stop the daemon, then the servers."""
        try:
            self.daemon.close()
        finally:
            self.stop_servers()


@pytest.fixture(scope="session")
def kms_seed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSeedDaemon]:
    """Keys legacy-aws (moto), legacy-vault, second-vault (OpenBao), legacy-gcp, records."""
    daemon = KmsSeedDaemon(tmp_path_factory.mktemp("kbseedkms"))
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def use_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Point the compat layer at a daemon: `use_broker(socket, **ECL_CRYPTO_* variables)`."""
    for name in list(os.environ):
        if name.startswith("ECL_CRYPTO_"):
            monkeypatch.delenv(name)

    def point(socket: Path, **env: str) -> None:
        monkeypatch.setenv("KEYBROKER_SOCKET", str(socket))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        _facade._shared.reset()
        _autoconfig.reset_default_encryptor()

    yield point
    _facade._shared.reset()
    _autoconfig.reset_default_encryptor()


def migrate_imports(code: str) -> str:
    """The one change a migrating user makes: the package name in import lines."""
    return re.sub(
        r"^(\s*)(from|import) ecl_crypto_utility\b",
        r"\1\2 keybroker_client.compat",
        code,
        flags=re.MULTILINE,
    )


def run_readme_block(block: str, namespace: dict[str, object] | None = None) -> dict[str, object]:
    """Run a README block (imports migrated) in a namespace, which is returned."""
    namespace = {} if namespace is None else namespace
    code = compile(migrate_imports(block), "<seed README>", "exec")
    exec(code, namespace)  # noqa: S102 - the README's own example code
    return namespace


@pytest.fixture
def run_block() -> Callable[..., dict[str, object]]:
    """`run_block(BLOCK, namespace=None)`: run a README block with its imports migrated."""
    return run_readme_block


@pytest.fixture
def migrate() -> Callable[[str], str]:
    """The import rewriting `run_block` applies, to test it."""
    return migrate_imports
