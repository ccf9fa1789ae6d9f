"""Services wired to in-memory fakes: one fresh set per test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from unit.services.fakes import Fakes

from broker.services.deks import DekLimits, DekProvider
from broker.services.envelope import EnvelopeLimits, EnvelopeService
from broker.services.operations import OperationLimits, Operations
from broker.services.workpool import WorkLimits, WorkPool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ENVELOPE_LIMITS = EnvelopeLimits(max_plaintext_bytes=1024, max_batch_items=8)
OPERATION_LIMITS = OperationLimits(max_data_bytes=256, max_batch_items=4)


@pytest.fixture
def fakes() -> Fakes:
    """Fresh fakes: backends, recording authorizer and audit sink, a clock."""
    return Fakes()


@pytest.fixture
def deks(fakes: Fakes) -> DekProvider:
    """A DEK provider with default limits on the fake clock."""
    return DekProvider(DekLimits(), clock=fakes.clock)


@pytest.fixture
def make_envelope(fakes: Fakes) -> Callable[..., EnvelopeService]:
    """Build envelope services over the shared fakes, each with its own DEK caches."""

    def make(
        limits: EnvelopeLimits = ENVELOPE_LIMITS, deks: DekProvider | None = None
    ) -> EnvelopeService:
        provider = deks or DekProvider(DekLimits(), clock=fakes.clock)
        return EnvelopeService(
            fakes.registry(), provider, fakes.authz, limits, fakes.clock, audit=fakes.audit
        )

    return make


@pytest.fixture
def envelope(make_envelope: Callable[..., EnvelopeService], deks: DekProvider) -> EnvelopeService:
    """The envelope service over `deks`: at most 1024 plaintext bytes and 8 items per batch."""
    return make_envelope(deks=deks)


@pytest.fixture
def ops(fakes: Fakes) -> Operations:
    """The shared key-operation plumbing: at most 256 data bytes and 4 items per batch."""
    return Operations(fakes.registry(), fakes.authz, OPERATION_LIMITS, fakes.audit)


@pytest.fixture
def pool() -> Iterator[WorkPool]:
    """A work pool with the default budget, closed after the test."""
    work = WorkPool(WorkLimits())
    yield work
    work.close()
