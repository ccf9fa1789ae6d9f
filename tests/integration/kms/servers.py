"""Real KMS servers for integration tests, each on a free 127.0.0.1 port, stopped cleanly.

    with start_moto() as moto:             # AWS KMS API (moto_server)
        kms = moto.kms_client()

Every handle supports `stop()`, `start()` (same port), `restart()`, `suspend()`/`resume()`
(SIGSTOP/SIGCONT: the server hangs but keeps its state) and is a context manager. A server
that cannot start raises `ServerStartError` with the tail of its log: tests never skip.

Moto keeps its state in memory, so `restart()` forgets every key. OpenBao (the Vault API)
lives in openbao.py, on the same `ServerHandle`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

__all__ = [
    "MotoServer",
    "ServerHandle",
    "ServerStartError",
    "find_moto_server",
    "free_port",
    "start_moto",
]

LOOPBACK = "127.0.0.1"


class ServerStartError(RuntimeError):
    """A test server did not start or answer in time (the message carries its log tail)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def find_moto_server() -> list[str]:
    """The argv prefix that runs moto's server: the script beside this Python, else -m."""
    script = Path(sys.executable).parent / "moto_server"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "moto.server"]


def http_json(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """One HTTP call with a JSON body: (status, decoded JSON or None); 4xx/5xx do not raise."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback http
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


class ServerHandle:
    """One server process on a fixed loopback port; start/stop/restart keep the same port."""

    name = "server"
    startup_timeout = 60.0

    def __init__(self, port: int | None = None) -> None:
        """Reserve a port and a scratch directory; `start()` runs the process."""
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"keybroker-{self.name}-"))
        self.log_path = self.workdir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL, stable across restarts."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive (a suspended one counts as running)."""
        return self._process is not None and self._process.poll() is None

    def argv(self) -> list[str]:
        """The command line; subclasses define it."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The process environment: ours, with HOME pointed at the scratch directory."""
        return {**os.environ, "HOME": str(self.workdir)}

    def answers(self) -> bool:
        """Whether the server answers requests yet; subclasses probe their API."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Seed the fresh process (enable engines, unseal); subclasses override."""

    def start(self) -> Self:
        """Run the process, wait until it answers, then seed it; raise with its log if it cannot."""
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=self.env(),
                start_new_session=True,
            )
        try:
            self._wait_until(self.answers, "to answer")
            self.after_start()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until(self, probe: Any, what: str) -> None:
        """Poll `probe` until true; fail loudly if the process dies or the deadline passes."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.running:
                self._fail(f"exited before {what}")
            with contextlib.suppress(OSError):
                if probe():
                    return
            time.sleep(0.05)
        self._fail(f"did not manage {what} within {self.startup_timeout:.0f} s")

    def _fail(self, reason: str) -> None:
        """Raise ServerStartError with the last lines of the server's log."""
        tail = self.log_path.read_text(errors="replace").splitlines()[-30:]
        msg = f"{self.name} on port {self.port} {reason}; log tail:\n" + "\n".join(tail)
        raise ServerStartError(msg)

    def stop(self) -> None:
        """Terminate, wait, then kill if it lingers; a suspended process is resumed first."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> Self:
        """Stop and start again on the same port (state survives only where documented)."""
        self.stop()
        return self.start()

    def suspend(self) -> None:
        """Freeze the process: connections hang instead of being refused."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a suspended process."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the process and remove its scratch directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start (if needed) on entry."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop and clean up on exit."""
        self.close()


class MotoServer(ServerHandle):
    """moto_server: the AWS KMS (and IAM) API, state in memory."""

    name = "moto"
    region = "us-east-1"
    access_key_id = "testing"
    secret_access_key = "testing"  # noqa: S105 - moto's conventional dummy secret

    def argv(self) -> list[str]:
        """`moto_server -H 127.0.0.1 -p PORT`."""
        return [*find_moto_server(), "-H", LOOPBACK, "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        """No real AWS credentials or config leak into the server."""
        env = {k: v for k, v in super().env().items() if not k.startswith("AWS_")}
        return {**env, "AWS_DEFAULT_REGION": self.region}

    def answers(self) -> bool:
        """Moto answers its own API once the app is loaded."""
        status, _ = http_json("GET", f"{self.url}/moto-api/data.json", timeout=1)
        return status == 200

    def client(self, service: str = "kms", **overrides: Any) -> Any:
        """An admin boto3 client for this server (dummy credentials; override any argument)."""
        boto3: Any = importlib.import_module("boto3")  # typed per service only by optional stubs

        arguments: dict[str, Any] = {
            "region_name": self.region,
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            **overrides,
        }
        return boto3.client(service, **arguments)

    def create_key(self, alias: str | None = None) -> str:
        """Create a symmetric KMS key (and an alias to it); return its ARN."""
        kms = self.client()
        arn: str = kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")[
            "KeyMetadata"
        ]["Arn"]
        if alias is not None:
            kms.create_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
        return arn

    def create_iam_user(self, name: str, actions: list[str]) -> tuple[str, str]:
        """An IAM user allowed only `actions` on every resource; returns (access key id, secret)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=name, PolicyName="kms", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    @contextlib.contextmanager
    def iam_enforced(self) -> Iterator[None]:
        """While inside, moto checks signatures and IAM policies like AWS does."""
        self._unauthenticated_requests(0)
        try:
            yield
        finally:
            self._unauthenticated_requests(float("inf"))

    def _unauthenticated_requests(self, count: float) -> None:
        """Tell moto how many requests to serve before it starts checking IAM."""
        status, _ = http_json("POST", f"{self.url}/moto-api/reset-auth", body=count)
        if status != 200:
            msg = f"moto refused reset-auth ({status})"
            raise ServerStartError(msg)


def start_moto() -> MotoServer:
    """Start moto_server on a free loopback port."""
    return MotoServer().start()
