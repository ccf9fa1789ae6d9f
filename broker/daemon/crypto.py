"""Wiring of the key-operation services: signing, RSA-OAEP, hashing, key derivation, tokens.

Part of the composition root (build_app calls `crypto_services`): it builds the shared
operation plumbing, the bounded password-hashing work pool and one ServicerSpec per service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.rpc.asymmetric import AsymmetricServicer
from broker.rpc.gen import (
    asymmetric_pb2,
    asymmetric_pb2_grpc,
    hashing_pb2,
    hashing_pb2_grpc,
    key_derivation_pb2,
    key_derivation_pb2_grpc,
    signing_pb2,
    signing_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from broker.rpc.hashing import HashingServicer
from broker.rpc.key_derivation import KeyDerivationServicer
from broker.rpc.signing import SigningServicer
from broker.rpc.token import TokenServicer
from broker.services.asymmetric import AsymmetricService
from broker.services.hashing import HashingService
from broker.services.kdf import KeyDerivationService
from broker.services.operations import OperationLimits, Operations
from broker.services.passwords import PasswordService
from broker.services.signing import SigningService
from broker.services.tokens import TokenService
from broker.services.workpool import WorkLimits, WorkPool
from broker.transport.server import ServicerSpec

if TYPE_CHECKING:
    from types import ModuleType

    from broker.config.schema import Config
    from broker.policy.authorizer import Authorizer
    from broker.services.audit import AuditSink
    from broker.services.keys import KeyRegistry

__all__ = ["crypto_services"]


def _name(module: ModuleType, service: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


def crypto_services(
    cfg: Config, registry: KeyRegistry, authorizer: Authorizer, audit: AuditSink
) -> list[ServicerSpec]:
    """The ServicerSpecs of the five key-operation services, sharing one hashing work pool."""
    server = cfg.server
    limits = OperationLimits(
        max_data_bytes=server.max_plaintext_bytes, max_batch_items=server.max_batch_items
    )
    ops = Operations(registry, authorizer, limits, audit)
    h = cfg.hashing
    pool = WorkPool(
        WorkLimits(max_concurrent=h.max_concurrent, memory_budget_bytes=h.memory_budget_bytes)
    )
    signing = SigningService(ops)
    asymmetric = AsymmetricService(ops)
    hashing = (HashingService(ops), PasswordService(ops, pool))
    kdf = KeyDerivationService(ops, pool)
    tokens = TokenService(ops)
    return [
        ServicerSpec(
            _name(signing_pb2, "SigningService"),
            signing_pb2_grpc.add_SigningServiceServicer_to_server,
            lambda ident, m: SigningServicer(signing, ident, m),
        ),
        ServicerSpec(
            _name(asymmetric_pb2, "AsymmetricService"),
            asymmetric_pb2_grpc.add_AsymmetricServiceServicer_to_server,
            lambda ident, m: AsymmetricServicer(asymmetric, ident, m),
        ),
        ServicerSpec(
            _name(hashing_pb2, "HashingService"),
            hashing_pb2_grpc.add_HashingServiceServicer_to_server,
            lambda ident, m: HashingServicer(hashing, ident, m),
        ),
        ServicerSpec(
            _name(key_derivation_pb2, "KeyDerivationService"),
            key_derivation_pb2_grpc.add_KeyDerivationServiceServicer_to_server,
            lambda ident, m: KeyDerivationServicer(kdf, ident, m),
        ),
        ServicerSpec(
            _name(token_pb2, "TokenService"),
            token_pb2_grpc.add_TokenServiceServicer_to_server,
            lambda ident, m: TokenServicer(tokens, ident, m),
        ),
    ]
