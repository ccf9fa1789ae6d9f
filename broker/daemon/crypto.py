"""Wiring of the key-operation services: signing, RSA-OAEP, hashing, key derivation, tokens.

Part of the composition root (build_app calls `crypto_services`): it builds the shared
operation plumbing, the bounded password-hashing work pool and the five services, and takes
each one's ServicerSpec from its servicer module in rpc/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.rpc.asymmetric import asymmetric_spec
from broker.rpc.hashing import hashing_spec
from broker.rpc.key_derivation import key_derivation_spec
from broker.rpc.signing import signing_spec
from broker.rpc.token import token_spec
from broker.services.asymmetric import AsymmetricService
from broker.services.hashing import HashingService
from broker.services.kdf import KeyDerivationService
from broker.services.operations import OperationLimits, Operations
from broker.services.passwords import HashCosts, PasswordService
from broker.services.signing import SigningService
from broker.services.tokens import TokenService
from broker.services.workpool import WorkLimits, WorkPool

if TYPE_CHECKING:
    from broker.config.schema import Config, HashingConfig
    from broker.policy.authorizer import Authorizer
    from broker.rpc.spec import ServicerSpec
    from broker.services.audit import AuditSink
    from broker.services.keys import KeyRegistry

__all__ = ["crypto_services"]


def crypto_services(
    cfg: Config, registry: KeyRegistry, authorizer: Authorizer, audit: AuditSink
) -> list[ServicerSpec]:
    """The ServicerSpecs of the five key-operation services, sharing one hashing work pool."""
    server = cfg.server
    limits = OperationLimits(
        max_data_bytes=server.max_plaintext_bytes, max_batch_items=server.max_batch_items
    )
    ops = Operations(registry, authorizer, limits, audit)
    pool = _work_pool(cfg.hashing)
    return [
        signing_spec(SigningService(ops)),
        asymmetric_spec(AsymmetricService(ops)),
        hashing_spec(HashingService(ops), PasswordService(ops, pool, _hash_costs(cfg.hashing))),
        key_derivation_spec(KeyDerivationService(ops, pool)),
        token_spec(TokenService(ops)),
    ]


def _work_pool(h: HashingConfig) -> WorkPool:
    """The pool: a caller's memory share always fits one hash of the largest accepted cost."""
    return WorkPool(
        WorkLimits(
            max_concurrent=h.max_concurrent,
            memory_budget_bytes=h.memory_budget_bytes,
            max_share_per_caller=h.max_share_per_caller,
            min_caller_bytes=h.max_memory_kib * 1024,
        )
    )


def _hash_costs(h: HashingConfig) -> HashCosts:
    """The largest costs a stored hash string may ask VerifyPassword for."""
    return HashCosts(
        max_memory_kib=h.max_memory_kib,
        max_time_cost=h.max_time_cost,
        max_parallelism=h.max_parallelism,
    )
