from pathlib import Path

import pytest

import keybroker_client as kb
from keybroker_client._channel import (
    CHANNEL_OPTIONS,
    SYSTEM_SOCKET,
    check_timeout,
    resolve_socket,
    target_for,
)


@pytest.fixture
def workdir(tmp_path):
    """A working directory without a dev socket unless a test creates one."""
    return tmp_path / "app"


class TestResolveSocket:
    """Socket resolution: argument, KEYBROKER_SOCKET, dev socket, system socket."""

    def test_argument_wins_over_everything(self, tmp_path, workdir):
        """An explicit socket= beats the environment and the dev socket."""
        (workdir / ".keybroker").mkdir(parents=True)
        (workdir / ".keybroker" / "keybroker.sock").touch()
        env = {"KEYBROKER_SOCKET": "/env/kb.sock"}

        path = resolve_socket(tmp_path / "arg.sock", environ=env, cwd=workdir)

        assert path == tmp_path / "arg.sock"

    def test_environment_beats_the_dev_socket(self, workdir):
        """KEYBROKER_SOCKET is used when no argument is given."""
        (workdir / ".keybroker").mkdir(parents=True)
        (workdir / ".keybroker" / "keybroker.sock").touch()

        path = resolve_socket(environ={"KEYBROKER_SOCKET": "/env/kb.sock"}, cwd=workdir)

        assert path == Path("/env/kb.sock")

    def test_dev_socket_when_it_exists(self, workdir):
        """`keybroker serve --dev` in the working directory is found without configuration."""
        (workdir / ".keybroker").mkdir(parents=True)
        (workdir / ".keybroker" / "keybroker.sock").touch()

        path = resolve_socket(environ={}, cwd=workdir)

        assert path == workdir / ".keybroker" / "keybroker.sock"

    def test_system_socket_otherwise(self, workdir):
        """With nothing configured and no dev socket, the system socket is dialled."""
        assert resolve_socket(environ={}, cwd=workdir) == SYSTEM_SOCKET

    def test_empty_environment_variable_counts_as_unset(self, workdir):
        """KEYBROKER_SOCKET= (empty) does not point the client at the working directory."""
        assert resolve_socket(environ={"KEYBROKER_SOCKET": ""}, cwd=workdir) == SYSTEM_SOCKET

    def test_relative_paths_become_absolute(self, workdir):
        """A relative socket is anchored at the working directory."""
        path = resolve_socket("run/kb.sock", environ={}, cwd=workdir)

        assert path == workdir / "run" / "kb.sock"
        assert path.is_absolute()

    @pytest.mark.parametrize("value", ["unix:/srv/kb.sock", "unix:///srv/kb.sock"])
    def test_grpc_unix_targets_are_accepted(self, value):
        """Users who paste a gRPC unix: target get the path they meant."""
        assert resolve_socket(environ={"KEYBROKER_SOCKET": value}) == Path("/srv/kb.sock")

    def test_reads_the_real_environment_by_default(self, monkeypatch):
        """Without environ=, the process environment is consulted."""
        monkeypatch.setenv("KEYBROKER_SOCKET", "/from/env.sock")

        assert resolve_socket() == Path("/from/env.sock")

    def test_too_long_path_is_refused_with_the_limit(self):
        """A path over the Unix socket limit fails early with a message naming the limit."""
        with pytest.raises(kb.InvalidParameterError, match="at most 107"):
            resolve_socket("/" + "x" * 120)


class TestChannelSettings:
    """Target string, message limits and what the Client takes from them."""

    def test_target_is_unix_scheme_with_absolute_path(self):
        """The gRPC target is `unix:` followed by the absolute path."""
        assert target_for(Path("/run/keybroker/keybroker.sock")) == (
            "unix:/run/keybroker/keybroker.sock"
        )

    def test_message_limits_are_64_mib(self):
        """Send and receive limits leave room above the daemon's 4 MiB default."""
        assert dict(CHANNEL_OPTIONS) == {
            "grpc.max_send_message_length": 64 << 20,
            "grpc.max_receive_message_length": 64 << 20,
        }

    def test_client_uses_the_argument(self, tmp_path):
        """Client(socket=...) dials that socket."""
        with kb.Client(tmp_path / "kb.sock") as client:
            assert client.socket == tmp_path / "kb.sock"

    def test_client_uses_the_environment(self, tmp_path, monkeypatch):
        """Client() reads KEYBROKER_SOCKET."""
        monkeypatch.setenv("KEYBROKER_SOCKET", str(tmp_path / "env.sock"))

        with kb.Client() as client:
            assert client.socket == tmp_path / "env.sock"


class TestTimeout:
    """Per-call deadlines."""

    def test_call_timeout_overrides_the_default(self):
        """A call's own timeout= wins over the client's."""
        assert check_timeout(2.5, 10.0) == 2.5

    def test_no_call_timeout_uses_the_default(self):
        """Without timeout= the client's deadline applies."""
        assert check_timeout(None, 10.0) == 10.0

    @pytest.mark.parametrize("value", [0, -1.0])
    def test_non_positive_timeouts_are_refused(self, value):
        """A deadline that has already passed is a caller mistake, reported as such."""
        with pytest.raises(kb.InvalidParameterError, match="timeout must be positive"):
            check_timeout(value, 10.0)

    def test_client_refuses_a_bad_default(self, tmp_path):
        """The constructor validates its timeout too."""
        with pytest.raises(kb.InvalidParameterError):
            kb.Client(tmp_path / "kb.sock", timeout=0)
