"""One policy over a unix, a peercred and an mTLS listener: names of one kind never match another.

A client certificate from the configured CA whose CN or DNS SAN reads `ops`, `uid:0` or
`listener:ops` must get nothing of what the `ops` listener or root (through peercred) may do,
while those two keep their access. Old-style configurations keep working where a bare name is
unambiguous, and otherwise stop `serve` and `policy check` with the same single line.
"""

from __future__ import annotations

import secrets
import subprocess
import sys

import grpc
import pytest
from support import certs
from support.daemon import free_port
from support.secrets_ledger import remember
from support.secure_daemon import ConfiguredDaemon, short_dir, stop_all

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc

CONFIG = """
[server]
state_dir = "{state}"
allow_root = true

[[listeners]]
kind = "unix"
path = "{run}/ops.sock"
mode = "0600"
identity = "ops"

[[listeners]]
kind = "peercred"
path = "{run}/peer.sock"
mode = "0666"

[[listeners]]
kind = "tcp"
address = "127.0.0.1:{port}"
[listeners.tls]
cert = "{base}/server.pem"
key = "{base}/server.key"
client_ca = "{base}/ca.pem"

[keys.default]
uri = "local://default"

[keys.ops]
uri = "local://ops"

[keys.root]
uri = "local://root"

[policy.identities.app]
spiffe_id = "spiffe://example.org/app"

[[policy.rules]]
id = "ops-only"
callers = [{ops}]
keys = ["ops"]
operations = ["*"]

[[policy.rules]]
id = "root-only"
callers = ["uid:0"]
keys = ["root"]
operations = ["*"]

[[policy.rules]]
id = "app-default"
callers = ["app", "spiffe://example.org/other"]
keys = ["default"]
operations = ["encrypt"]
"""


class Pki:
    """The configured CA and the server certificate, written where the daemon reads them."""

    def __init__(self, base) -> None:
        """Issue the CA and the server certificate into base."""
        self.ca = certs.ca()
        server = certs.server(self.ca)
        remember(server.key, self.ca.key)
        server.write(base / "server.pem", base / "server.key")
        (base / "ca.pem").write_bytes(self.ca.cert)

    def channel(self, port: int, *, cn: str = "client", dns: str = "", spiffe: str = ""):
        """A TLS channel presenting a client certificate the configured CA issued."""
        client = certs.client(self.ca, cn=cn, dns=dns, spiffe=spiffe)
        remember(client.key)
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert,
            private_key=client.key,
            certificate_chain=client.cert,
        )
        return grpc.secure_channel(f"127.0.0.1:{port}", creds)


@pytest.fixture(
    scope="module", params=['"ops"', '"listener:ops"'], ids=["bare-listener-name", "typed"]
)
def shared(request):
    """One daemon per spelling of the ops rule (bare or typed), its PKI and its TLS port."""
    base = short_dir()
    run = base / "run"
    run.mkdir()
    run.chmod(0o755)
    master = secrets.token_hex(32)
    remember(master.encode(), bytes.fromhex(master))
    port = free_port()
    text = CONFIG.format(state=base / "state", run=run, base=base, port=port, ops=request.param)
    daemon = ConfiguredDaemon(base, text, run / "ops.sock", {"ECL_CRYPTO_LOCAL_MASTER_KEY": master})
    base.chmod(0o700)
    pki = Pki(base)
    try:
        daemon.start()
        yield daemon, pki, port
    finally:
        stop_all([daemon])


def _code(channel, key: str) -> grpc.StatusCode:
    stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
    try:
        stub.Encrypt(pb.EncryptRequest(key=key, plaintext=b"kinds"), timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _last_op(daemon) -> dict[str, object]:
    return [r for r in daemon.records() if r["event"] == "op"][-1]


class TestCertificates:
    """Whatever a certificate's names say, it gets only the rules written for certificates."""

    @pytest.mark.parametrize(
        ("cn", "dns"),
        [("ops", ""), ("uid:0", ""), ("listener:ops", ""), ("client", "ops")],
    )
    @pytest.mark.parametrize("key", ["ops", "root"])
    def test_denied_what_ops_and_root_may_do(self, shared, cn, dns, key):
        """A CN or DNS SAN spelling `ops`, `uid:0` or `listener:ops` is PERMISSION_DENIED."""
        _, pki, port = shared
        with pki.channel(port, cn=cn, dns=dns) as channel:
            assert _code(channel, key) == grpc.StatusCode.PERMISSION_DENIED

    def test_audit_names_the_certificate_kind(self, shared):
        """The denial is recorded with the typed name `cn:ops` and kind `cn`."""
        daemon, pki, port = shared
        with pki.channel(port, cn="ops") as channel:
            _code(channel, "ops")
        op = _last_op(daemon)
        assert (op["caller"], op["caller_kind"], op["decision"], op["rule_id"]) == (
            "cn:ops",
            "cn",
            "deny",
            "default-deny",
        )

    @pytest.mark.parametrize("spiffe", ["spiffe://example.org/app", "spiffe://example.org/other"])
    def test_certificate_rules_still_served(self, shared, spiffe):
        """A SPIFFE ID the policy names, through an identity or as it is, keeps its access."""
        _, pki, port = shared
        with pki.channel(port, spiffe=spiffe) as channel:
            assert _code(channel, "default") == grpc.StatusCode.OK

    def test_cn_spelling_a_spiffe_id_is_not_one(self, shared):
        """A CN reading like a SPIFFE ID the policy names is `cn:…`, and denied."""
        daemon, pki, port = shared
        with pki.channel(port, cn="spiffe://example.org/other") as channel:
            assert _code(channel, "default") == grpc.StatusCode.PERMISSION_DENIED
        assert _last_op(daemon)["caller"] == "cn:spiffe://example.org/other"


class TestOwners:
    """The listener's callers and root through peercred keep exactly their own rules."""

    def test_listener_keeps_its_key(self, shared):
        """The `ops` socket may use key `ops`, recorded as `listener:ops`, and not `root`."""
        daemon, _, _ = shared
        with daemon.connect() as channel:
            assert _code(channel, "ops") == grpc.StatusCode.OK
            op = _last_op(daemon)
            assert (op["caller"], op["caller_kind"], op["rule_id"]) == (
                "listener:ops",
                "listener",
                "ops-only",
            )
            assert _code(channel, "root") == grpc.StatusCode.PERMISSION_DENIED

    def test_root_keeps_its_key(self, shared):
        """This process (uid 0) through the peercred socket may use `root`, and not `ops`."""
        daemon, _, _ = shared
        with daemon.connect(daemon.socket.with_name("peer.sock")) as channel:
            assert _code(channel, "root") == grpc.StatusCode.OK
            op = _last_op(daemon)
            assert (op["caller"], op["caller_kind"], op["uid"]) == ("uid:0", "peercred", "0")
            assert _code(channel, "ops") == grpc.StatusCode.PERMISSION_DENIED


OLD_STYLE = """
[server]
state_dir = "{state}"
allow_root = true

[[listeners]]
kind = "unix"
path = "{run}/ops.sock"
identity = "ops"

[keys.default]
uri = "local://default"
{policy}
[[policy.rules]]
id = "old"
callers = ["{caller}"]
keys = ["default"]
operations = ["*"]
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _config(caller: str, policy: str = "") -> str:
    base = short_dir()
    path = base / "keybroker.toml"
    path.write_text(OLD_STYLE.format(state=base / "state", run=base, caller=caller, policy=policy))
    path.chmod(0o600)
    return str(path)


def _errors(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.startswith("keybroker: ")]


class TestOldConfigurations:
    """A bare name that no longer says which caller it means stops the start with one line."""

    @pytest.mark.parametrize(
        ("caller", "policy", "problem"),
        [
            (
                "billing.internal",
                "",
                (
                    '"billing.internal" names no identity and no unix listener; write '
                    '"listener:billing.internal" for a unix listener, "dns:billing.internal" or '
                    '"cn:billing.internal" for a client certificate'
                ),
            ),
            (
                "Payments Service",
                "",
                (
                    '"Payments Service" is not an identity name; write "dns:Payments Service" '
                    'or "cn:Payments Service" for a client certificate'
                ),
            ),
            (
                "ops",
                "[policy.identities.ops]\nuid = 0\n",
                (
                    '"ops" names [identities.ops], which the callers of the unix listener "ops" '
                    'are not; write "listener:ops" for them, or rename the identity'
                ),
            ),
        ],
        ids=["dns-name", "cn-with-space", "identity-and-listener"],
    )
    def test_serve_and_policy_check_refuse(self, caller, policy, problem):
        """`serve` exits 2 and `policy check` exits 2, each with the same single line."""
        path = _config(caller, policy)
        line = f"keybroker: {path}: rules[0].callers: {problem}"
        served = _run("serve", "--config", path)
        assert (served.returncode, _errors(served)) == (2, [line]), served.stderr
        checked = _run("policy", "check", path)
        assert (checked.returncode, _errors(checked)) == (2, [line]), checked.stderr

    def test_bare_listener_name_checks_ok(self):
        """The old way of naming a unix listener's callers is still valid."""
        checked = _run("policy", "check", _config("ops"))
        assert checked.returncode == 0, checked.stderr
        assert "ok (0 identities, 1 rules, 0 limits)" in checked.stdout

    def test_policy_file_alone_names_what_it_leaves_to_listeners(self, tmp_path):
        """Without the config, `policy check` cannot see listeners: it says which names need one."""
        path = tmp_path / "policy.toml"
        path.write_text(
            '[identities.billing]\nuid = 1001\n[[rules]]\nid = "r"\n'
            'callers = ["billing", "ops", "app-*", "uid:0"]\nkeys = ["k"]\noperations = ["*"]\n'
        )
        checked = _run("policy", "check", str(path))
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.splitlines()[1:] == [
            'note: "ops", "app-*" name no identity here; serve takes them for unix listeners'
        ]
