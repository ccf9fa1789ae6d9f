"""Policy at work in a daemon: tenant isolation, rate limits, reload without restart."""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest
from support.secrets_ledger import remember

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
kind = "unix"
path = "{run}/tenant-a.sock"
identity = "billing-a"

[[listeners]]
kind = "unix"
path = "{run}/tenant-b.sock"
identity = "billing-b"

[keys.pii]
uri = "local://pii"

[policy]
file = "{base}/policy.toml"
"""

POLICY = """
[identities.billing-a]
listener = "billing-a"
attributes = {{ tenant = "a" }}

[identities.billing-b]
listener = "billing-b"
attributes = {{ tenant = "b" }}

[[rules]]
id = "own-tenant"
callers = ["billing-*"]
keys = ["pii"]
operations = ["encrypt", "decrypt", "rewrap"]
context = {{ tenant = "${{caller.tenant}}" }}

[[limits]]
id = "b-slow"
callers = ["billing-b"]
rate = {rate}
burst = 3
"""


@pytest.fixture
def tenants(configured):
    """Two tenants' sockets on one daemon; billing-b is rate limited."""
    daemon = configured(CONFIG)
    (daemon.base / "policy.toml").write_text(POLICY.format(rate=0.5), encoding="utf-8")
    return daemon.start()


def _stub(daemon, tenant: str) -> envelope_pb2_grpc.EnvelopeServiceStub:
    channel = daemon.connect(daemon.socket.with_name(f"tenant-{tenant}.sock"))
    return envelope_pb2_grpc.EnvelopeServiceStub(channel)


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


class TestTenantIsolation:
    """Tenant B cannot open tenant A's envelopes, although both may use key `pii`."""

    def test_b_cannot_decrypt_a(self, tenants):
        """B presenting A's context is denied; B presenting its own context cannot open it."""
        secret = os.urandom(24)
        remember(secret)
        a, b = _stub(tenants, "a"), _stub(tenants, "b")
        ct = a.Encrypt(pb.EncryptRequest(key="pii", plaintext=secret, context={"tenant": "a"}))
        assert a.Decrypt(pb.DecryptRequest(ciphertext=ct.ciphertext, context={"tenant": "a"}))
        as_a = pb.DecryptRequest(ciphertext=ct.ciphertext, context={"tenant": "a"})
        as_b = pb.DecryptRequest(ciphertext=ct.ciphertext, context={"tenant": "b"})
        assert _code(lambda: b.Decrypt(as_a)) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: b.Decrypt(as_b)) == grpc.StatusCode.INVALID_ARGUMENT

    def test_stored_context_is_the_one_authorized(self, tenants):
        """With the context stored, B is denied; presenting another context does not open it."""
        a, b = _stub(tenants, "a"), _stub(tenants, "b")
        ct = a.Encrypt(
            pb.EncryptRequest(
                key="pii", plaintext=b"x", context={"tenant": "a"}, store_context=True
            )
        ).ciphertext
        stored = pb.DecryptRequest(ciphertext=ct)
        assert _code(lambda: b.Decrypt(stored)) == grpc.StatusCode.PERMISSION_DENIED
        other = pb.DecryptRequest(ciphertext=ct, context={"tenant": "b"})
        assert _code(lambda: b.Decrypt(other)) == grpc.StatusCode.INVALID_ARGUMENT

    def test_cannot_encrypt_for_another_tenant(self, tenants):
        """A sealing under tenant b's context is denied, and so is a rewrap into it."""
        a = _stub(tenants, "a")
        req = pb.EncryptRequest(key="pii", plaintext=b"x", context={"tenant": "b"})
        assert _code(lambda: a.Encrypt(req)) == grpc.StatusCode.PERMISSION_DENIED

    def test_denials_are_audited_with_rule(self, tenants):
        """The denied decrypt has an op record with decision deny and rule default-deny."""
        a, b = _stub(tenants, "a"), _stub(tenants, "b")
        ct = a.Encrypt(pb.EncryptRequest(key="pii", plaintext=b"x", context={"tenant": "a"}))
        _code(
            lambda: b.Decrypt(pb.DecryptRequest(ciphertext=ct.ciphertext, context={"tenant": "a"}))
        )
        op = [r for r in tenants.records() if r["event"] == "op"][-1]
        assert (op["caller"], op["decision"], op["rule_id"], op["code"]) == (
            "billing-b",
            "deny",
            "default-deny",
            "PERMISSION_DENIED",
        )


class TestRateLimit:
    """Over the limit: RESOURCE_EXHAUSTED with retry-after-ms, per item in batches."""

    def test_unary_over_limit(self, tenants):
        """Burst 3 at 0.5/s: the 4th call is refused with a retry hint near 2 s."""
        b = _stub(tenants, "b")
        req = pb.EncryptRequest(key="pii", plaintext=b"x", context={"tenant": "b"})
        for _ in range(3):
            b.Encrypt(req)
        with pytest.raises(grpc.RpcError) as info:
            b.Encrypt(req)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(info.value.trailing_metadata())
        assert 1000 < int(trailers["retry-after-ms"]) <= 2000
        assert trailers["keybroker-error-reason"] == "RATE_LIMITED"
        assert (
            _code(
                lambda: _stub(tenants, "a").Encrypt(
                    pb.EncryptRequest(key="pii", plaintext=b"x", context={"tenant": "a"})
                )
            )
            == grpc.StatusCode.OK
        )

    def test_batch_items_over_limit(self, tenants):
        """A batch of 5 gets 3 results and 2 RESOURCE_EXHAUSTED items; the reply has the hint."""
        b = _stub(tenants, "b")
        items = [pb.EncryptRequest(key="pii", plaintext=b"x", context={"tenant": "b"})] * 5
        reply, call = b.EncryptBatch.with_call(pb.EncryptBatchRequest(items=items))
        codes = [r.WhichOneof("result") for r in reply.results]
        assert codes.count("response") == 3
        limited = [r.error for r in reply.results if r.WhichOneof("result") == "error"]
        assert {e.reason for e in limited} == {"RATE_LIMITED"}
        assert "retry-after-ms" in dict(call.trailing_metadata())
        ops = [r for r in tenants.records() if r["event"] == "op"][-5:]
        assert sum(r.get("limit_id") == "b-slow" for r in ops) == 2

    def test_denied_calls_take_no_tokens(self, tenants):
        """Tenant b's denials stay PERMISSION_DENIED past its burst and leave its tokens whole."""
        b = _stub(tenants, "b")
        foreign = pb.EncryptRequest(key="pii", plaintext=b"x", context={"tenant": "a"})
        own = pb.EncryptRequest(key="pii", plaintext=b"x", context={"tenant": "b"})
        denied, ok = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OK
        assert [_code(lambda: b.Encrypt(foreign)) for _ in range(5)] == [denied] * 5
        assert [_code(lambda: b.Encrypt(own)) for _ in range(3)] == [ok] * 3
        with pytest.raises(grpc.RpcError) as info:
            b.Encrypt(foreign)
        assert info.value.code() == denied
        assert info.value.details() == "permission denied"
        assert "retry-after-ms" not in dict(info.value.trailing_metadata())
        assert _code(lambda: b.Encrypt(own)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        ops = [r for r in tenants.records() if r["event"] == "op"][-10:]
        assert [(r["decision"], r["code"], r.get("limit_id")) for r in ops] == [
            *[("deny", "PERMISSION_DENIED", None)] * 5,
            *[("allow", "OK", None)] * 3,
            ("deny", "PERMISSION_DENIED", None),
            ("allow", "RESOURCE_EXHAUSTED", "b-slow"),
        ]


class TestReload:
    """A changed policy applies without restart; an invalid one is refused, the old one stays."""

    def _b_encrypt(self, tenants) -> grpc.StatusCode:
        req = pb.EncryptRequest(key="pii", plaintext=b"x", context={"tenant": "b"})
        return _code(lambda: _stub(tenants, "b").Encrypt(req))

    def test_file_change_and_sighup(self, tenants):
        """Removing the rule denies at once; SIGHUP reloads too; garbage keeps the last policy."""
        path = tenants.base / "policy.toml"
        assert self._b_encrypt(tenants) == grpc.StatusCode.OK
        path.write_text(POLICY.format(rate=1000).replace('"billing-*"', '"billing-a"'))
        assert _eventually(lambda: self._b_encrypt(tenants) == grpc.StatusCode.PERMISSION_DENIED)
        path.write_text("rules = [ this is not toml")
        tenants.proc.send_signal(signal.SIGHUP)
        assert _eventually(lambda: "policy_reload_failed" in tenants.log())
        assert self._b_encrypt(tenants) == grpc.StatusCode.PERMISSION_DENIED
        path.write_text(POLICY.format(rate=999))
        tenants.proc.send_signal(signal.SIGHUP)
        assert _eventually(lambda: self._b_encrypt(tenants) == grpc.StatusCode.OK)


def _eventually(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False
