"""KeyAdminServicer: the gRPC adapter of KeyAdminService."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.errors import InvalidRequestError
from broker.rpc.calls import ServicerBase, unary
from broker.rpc.convert import key_message, version_message
from broker.rpc.gen import key_admin_pb2 as pb
from broker.rpc.gen import key_admin_pb2_grpc
from broker.rpc.spec import ServicerSpec, service_name

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics
    from broker.services.admin import KeyAdminService

__all__ = ["KeyAdminServicer", "key_admin_spec"]

_TARGET_STATE = {
    pb.KEY_VERSION_STATE_ENABLED: True,
    pb.KEY_VERSION_STATE_DISABLED: False,
}


class KeyAdminServicer(ServicerBase, key_admin_pb2_grpc.KeyAdminServiceServicer):
    """Serves keybroker.v1.KeyAdminService."""

    def __init__(
        self, service: KeyAdminService, identity: IdentityResolver, metrics: RpcMetrics
    ) -> None:
        """Bind the use case to one listener."""
        super().__init__(identity, metrics)
        self._svc = service

    @unary("DescribeKey")
    async def DescribeKey(  # noqa: N802
        self, request: pb.DescribeKeyRequest, caller: Caller
    ) -> pb.DescribeKeyResponse:
        """One key's metadata."""
        return pb.DescribeKeyResponse(
            key=key_message(await self._svc.describe(caller, request.key))
        )

    @unary("ListKeys")
    async def ListKeys(self, request: pb.ListKeysRequest, caller: Caller) -> pb.ListKeysResponse:  # noqa: N802
        """The keys the caller may administer."""
        del request
        return pb.ListKeysResponse(keys=[key_message(d) for d in await self._svc.list(caller)])

    @unary("RotateKey")
    async def RotateKey(self, request: pb.RotateKeyRequest, caller: Caller) -> pb.RotateKeyResponse:  # noqa: N802
        """Create a new current version."""
        return pb.RotateKeyResponse(key=key_message(await self._svc.rotate(caller, request.key)))

    @unary("ListKeyVersions")
    async def ListKeyVersions(  # noqa: N802
        self, request: pb.ListKeyVersionsRequest, caller: Caller
    ) -> pb.ListKeyVersionsResponse:
        """A key's versions, oldest first."""
        desc = await self._svc.describe(caller, request.key)
        return pb.ListKeyVersionsResponse(
            versions=[version_message(v) for v in desc.backend_key.versions]
        )

    @unary("UpdateKeyVersion")
    async def UpdateKeyVersion(  # noqa: N802
        self, request: pb.UpdateKeyVersionRequest, caller: Caller
    ) -> pb.UpdateKeyVersionResponse:
        """Enable or disable one version."""
        if request.state not in _TARGET_STATE:
            raise InvalidRequestError("state must be KEY_VERSION_STATE_ENABLED or _DISABLED")
        enabled = _TARGET_STATE[request.state]
        info = await self._svc.set_version_state(
            caller, request.key, request.version, enabled=enabled
        )
        return pb.UpdateKeyVersionResponse(version=version_message(info))


def key_admin_spec(service: KeyAdminService) -> ServicerSpec:
    """The spec BrokerServer registers: one servicer per listener, all around this use case."""
    return ServicerSpec(
        service_name(pb, "KeyAdminService"),
        key_admin_pb2_grpc.add_KeyAdminServiceServicer_to_server,
        lambda identity, metrics: KeyAdminServicer(service, identity, metrics),
    )
