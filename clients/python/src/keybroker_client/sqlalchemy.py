"""SQLAlchemy 2 columns whose values the broker seals, and blind indexes to search them.

``EncryptedColumn`` stores an envelope (``LargeBinary``: the binary envelope is about a
third smaller than its base64 text and every supported database has a binary type).
``BlindIndexColumn`` stores the broker's blind index of another attribute. A type alone
never sees the row, so ``install(session_or_factory, client)`` adds the ORM events that do:

- on flush, every new or modified object's encrypted values are sealed with the context
  taken from the row, in one ``EncryptBatch`` call per (key, context) group, and its blind
  indexes computed in one ``BlindIndexBatch`` call per (key, field, tenant) group;
- on load, every object a statement loads is opened in one ``DecryptBatch`` call per
  context group, after the statement's rows are read (results are buffered, so
  ``yield_per`` streaming is lost); a failure raises the client's ``DecryptionError``.

A value that reaches the database without passing through these events (a session without
``install``, a bulk ``insert()``, a comparison in a WHERE clause) is refused, never written
in clear. Selecting an encrypted column alone (``select(User.email)``) returns ``Sealed``
envelopes, since no row is there to give the context.
"""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final

from ._errors import InvalidParameterError, KeybrokerError

try:
    import sqlalchemy
    from sqlalchemy import event, inspect
    from sqlalchemy.orm import Mapper, Session, attributes

    if sqlalchemy.__version__.startswith(("0.", "1.")):
        raise ImportError  # noqa: TRY301 - turned into the install hint below
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "keybroker_client.sqlalchemy needs SQLAlchemy 2: pip install 'keybroker-client[sqlalchemy]'"
    ) from None

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from sqlalchemy.engine import Dialect, Result
    from sqlalchemy.orm import ORMExecuteState, QueryContext, UOWTransaction, sessionmaker
    from sqlalchemy.orm.state import InstanceState
    from sqlalchemy.sql.elements import ColumnElement

    from ._client import Client

    ContextOf = Callable[[Any], Mapping[str, str]]
    TenantOf = str | Callable[[Any], str]

__all__ = [
    "BlindIndexColumn",
    "EncryptedColumn",
    "Sealed",
    "blind_index_filter",
    "install",
]

_INFO_LOADED: Final = "keybroker_loaded"
_INFO_SEALED: Final = "keybroker_sealed"
_ContextKey = tuple[tuple[str, str], ...]
_DEFAULT_BATCH = 1000  # the daemon's default max_batch_items
_Specs = tuple[list[tuple[str, "EncryptedColumn"]], list[tuple[str, "BlindIndexColumn"]]]
_SPECS: weakref.WeakKeyDictionary[Mapper[Any], _Specs] = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True, slots=True)
class Sealed:
    """An envelope as stored, before the row it belongs to was opened."""

    ciphertext: bytes = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        """Show the size only: an envelope in a log is noise."""
        return f"Sealed(<{len(self.ciphertext)} bytes>)"


class EncryptedColumn(sqlalchemy.types.TypeDecorator[object]):
    """A column whose values are sealed under ``key`` with the context ``context(row)`` gives.

    Attribute values are ``str`` (stored as UTF-8) or, with ``text=False``, ``bytes``.
    """

    impl = sqlalchemy.types.LargeBinary
    cache_ok = True

    def __init__(self, *, key: str = "default", context: ContextOf, text: bool = True) -> None:
        """Name the logical key and how a row's encryption context is built."""
        super().__init__()
        self.key = key
        self.context = context
        self.text = text

    def process_bind_param(self, value: object | None, dialect: Dialect) -> bytes | None:
        """Write envelopes only: a plaintext here means the session events were bypassed."""
        del dialect
        if value is None or isinstance(value, Sealed):
            return None if value is None else value.ciphertext
        raise InvalidParameterError(
            "an EncryptedColumn value reached the database unsealed: flush it through a "
            "session given to keybroker_client.sqlalchemy.install(); search with a blind index",
            reason="INVALID_ARGUMENT",
        )

    def process_result_value(self, value: object | None, dialect: Dialect) -> Sealed | None:
        """Mark stored envelopes so the load events know what is still sealed."""
        del dialect
        return None if value is None else Sealed(bytes(value))  # type: ignore[call-overload]

    def to_bytes(self, value: object) -> bytes:
        """The plaintext bytes of an attribute value, refusing the wrong Python type."""
        if self.text and isinstance(value, str):
            return value.encode("utf-8")
        if not self.text and isinstance(value, bytes):
            return value
        kind = "str" if self.text else "bytes"
        raise TypeError(f"an EncryptedColumn(text={self.text}) value must be {kind}")

    def from_bytes(self, plaintext: bytes) -> str | bytes:
        """The attribute value of opened plaintext."""
        return plaintext.decode("utf-8") if self.text else plaintext


class BlindIndexColumn(sqlalchemy.types.TypeDecorator[bytes]):
    """The broker's blind index of attribute ``of``, for equality search on an encrypted column.

    ``tenant`` is a fixed name or ``tenant(row)``; ``field`` defaults to ``of``.
    """

    impl = sqlalchemy.types.LargeBinary
    cache_ok = True

    def __init__(
        self, *, of: str, key: str, tenant: TenantOf, field: str | None = None, length: int = 32
    ) -> None:
        """Name the source attribute and the BlindIndex parameters."""
        super().__init__()
        self.of = of
        self.key = key
        self.tenant = tenant
        self.field = field or of
        self.length = length

    def tenant_of(self, row: object) -> str:
        """The tenant name for a row (or the fixed one)."""
        return self.tenant if isinstance(self.tenant, str) else self.tenant(row)

    def search_tokens(self, client: Client, value: bytes, tenant: str) -> list[bytes]:
        """Every index value a stored row may hold for value: today one, the current key's."""
        token = client.blind_index(
            value, key=self.key, field=self.field, tenant=tenant, length=self.length
        )
        return [token]


def blind_index_filter(
    column: Any,  # noqa: ANN401 - a Column or an ORM attribute, both typed loosely by SQLAlchemy
    value: str | bytes,
    *,
    client: Client,
    tenant: str,
) -> ColumnElement[bool]:
    """``column IN (index values of value)``: the WHERE clause of an equality search."""
    index_type = column.expression.type
    if not isinstance(index_type, BlindIndexColumn):
        raise TypeError("blind_index_filter needs a BlindIndexColumn column")
    raw = value.encode("utf-8") if isinstance(value, str) else value
    tokens = index_type.search_tokens(client, raw, tenant)
    result: ColumnElement[bool] = column.in_(tokens)
    return result


def install(
    target: Session | sessionmaker[Any] | type[Session],
    client: Client,
    *,
    batch_size: int = _DEFAULT_BATCH,
) -> None:
    """Seal, index and open encrypted columns for every session of target through client."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    crypto = _RowCrypto(client, batch_size)
    event.listen(target, "before_flush", crypto.before_flush)
    event.listen(target, "after_flush_postexec", crypto.after_flush)
    event.listen(target, "after_soft_rollback", crypto.after_rollback)
    event.listen(target, "do_orm_execute", crypto.on_execute)
    if not event.contains(Mapper, "load", _note_loaded):
        event.listen(Mapper, "load", _note_loaded)
        event.listen(Mapper, "refresh", _note_refreshed)


def _note_loaded(target: object, context: QueryContext) -> None:
    """Queue a freshly loaded object for opening, if its session is an installed one."""
    queue = context.session.info.get(_INFO_LOADED)
    if queue is not None and _columns(inspect(target).mapper)[0]:
        queue.append(target)


def _note_refreshed(target: object, context: QueryContext, attrs: Iterable[str] | None) -> None:
    """Refreshed attributes (after commit, for example) come back sealed too."""
    del attrs
    _note_loaded(target, context)


def _columns(mapper: Mapper[Any]) -> _Specs:
    """The mapper's encrypted and blind-index attributes by name, looked up once per mapper."""
    specs = _SPECS.get(mapper)
    if specs is None:
        specs = ([], [])
        for prop in mapper.column_attrs:
            for column in prop.columns:
                if isinstance(column.type, EncryptedColumn):
                    specs[0].append((prop.key, column.type))
                elif isinstance(column.type, BlindIndexColumn):
                    specs[1].append((prop.key, column.type))
        _SPECS[mapper] = specs
    return specs


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most size items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _raise_failed(results: Sequence[bytes | KeybrokerError]) -> list[bytes]:
    """Results of a batch whose every item must succeed: the first failure is raised."""
    for result in results:
        if isinstance(result, KeybrokerError):
            raise result
    return [r for r in results if isinstance(r, bytes)]


@dataclasses.dataclass
class _Pending:
    """Work of one flush: values to seal and indexes to compute, grouped for batch calls."""

    seal: dict[tuple[str, _ContextKey], list[tuple[object, str, bytes]]] = dataclasses.field(
        default_factory=lambda: defaultdict(list)
    )
    index: dict[tuple[str, str, str, int], list[tuple[object, str, bytes]]] = dataclasses.field(
        default_factory=lambda: defaultdict(list)
    )
    restore: list[tuple[object, str, object]] = dataclasses.field(default_factory=list)


class _RowCrypto:
    """The session events of one ``install``: they share its client and batch size."""

    def __init__(self, client: Client, batch_size: int) -> None:
        """Keep the client the events call."""
        self._client = client
        self._batch = batch_size

    def before_flush(
        self, session: Session, flush_context: UOWTransaction, instances: object
    ) -> None:
        """Index and seal every new or modified object's plaintext values in batch calls."""
        del flush_context, instances
        pending = _Pending()
        changed = [o for o in session.dirty if session.is_modified(o)]
        for obj in itertools.chain(session.new, changed):
            self._collect(obj, pending)
        try:
            self._index(pending)
            self._seal(pending)
        except BaseException:
            _restore(pending.restore)
            raise
        session.info.setdefault(_INFO_SEALED, []).extend(pending.restore)

    def _collect(self, obj: object, pending: _Pending) -> None:
        """Queue the object's loaded plaintext values; sealed or unloaded ones stay as they are."""
        sealed, indexes = _columns(inspect(obj).mapper)
        values = inspect(obj).dict
        for name, spec in sealed:
            value = values.get(name)
            if value is None or isinstance(value, Sealed):
                continue
            group = (spec.key, _context_key(spec.context(obj)))
            pending.seal[group].append((obj, name, spec.to_bytes(value)))
            pending.restore.append((obj, name, value))
        for name, index in indexes:
            source = values.get(index.of)
            if source is None or isinstance(source, Sealed):
                continue
            raw = source.encode("utf-8") if isinstance(source, str) else bytes(source)
            where = (index.key, index.field, index.tenant_of(obj), index.length)
            pending.index[where].append((obj, name, raw))

    def _seal(self, pending: _Pending) -> None:
        """One EncryptBatch per (key, context) group and batch-size slice."""
        for (key, context), items in pending.seal.items():
            for part in _chunks(items, self._batch):
                plaintexts = [raw for _, _, raw in part]
                sealed = self._client.encrypt_batch(plaintexts, key=key, context=dict(context))
                for (obj, name, _), ciphertext in zip(part, _raise_failed(sealed), strict=True):
                    setattr(obj, name, Sealed(ciphertext))

    def _index(self, pending: _Pending) -> None:
        """One BlindIndexBatch per (key, field, tenant, length) group and batch-size slice."""
        for (key, field, tenant, length), items in pending.index.items():
            for part in _chunks(items, self._batch):
                values = [raw for _, _, raw in part]
                tokens = self._client.blind_index_batch(
                    values, key=key, field=field, tenant=tenant, length=length
                )
                for (obj, name, _), token in zip(part, _raise_failed(tokens), strict=True):
                    setattr(obj, name, token)

    def after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        """Give the flushed objects their plaintext back, as unchanged values."""
        del flush_context
        for obj, name, value in session.info.pop(_INFO_SEALED, []):
            attributes.set_committed_value(obj, name, value)

    def after_rollback(self, session: Session, previous_transaction: object) -> None:
        """A failed flush leaves the objects pending: put their plaintext back to flush again."""
        del previous_transaction
        _restore(session.info.pop(_INFO_SEALED, []))

    def on_execute(self, orm_execute_state: ORMExecuteState) -> Result[Any] | None:
        """Run a SELECT, then open what it loaded in batch calls before handing rows back."""
        if not orm_execute_state.is_select:
            return None
        info = orm_execute_state.session.info
        outer = _INFO_LOADED not in info
        queue: list[object] = info.setdefault(_INFO_LOADED, [])
        try:
            frozen = orm_execute_state.invoke_statement().freeze()
            loaded, queue[:] = list(queue), []
            self._open(loaded)
        finally:
            if outer:
                info.pop(_INFO_LOADED, None)
        return frozen()

    def _open(self, loaded: Sequence[object]) -> None:
        """One DecryptBatch per context group and batch-size slice; any failure is raised."""
        groups: dict[_ContextKey, list[tuple[object, str, EncryptedColumn, bytes]]]
        groups = defaultdict(list)
        for obj in loaded:
            values = inspect(obj).dict
            for name, spec in _columns(inspect(obj).mapper)[0]:
                value = values.get(name)
                if isinstance(value, Sealed):
                    context = _context_key(spec.context(obj))
                    groups[context].append((obj, name, spec, value.ciphertext))
        for context, items in groups.items():
            for part in _chunks(items, self._batch):
                ciphertexts = [ciphertext for *_, ciphertext in part]
                opened = self._client.decrypt_batch(ciphertexts, context=dict(context))
                for (obj, name, spec, _), plain in zip(part, _raise_failed(opened), strict=True):
                    attributes.set_committed_value(obj, name, spec.from_bytes(plain))


def _context_key(context: Mapping[str, str]) -> _ContextKey:
    """A context as a hashable group key (and back to a dict with ``dict(key)``)."""
    return tuple(sorted(dict(context).items()))


def _restore(sealed: Iterable[tuple[object, str, object]]) -> None:
    """Put plaintext back into objects whose flush did not happen, so a retry seals it again."""
    for obj, name, value in sealed:
        state: InstanceState[Any] = inspect(obj)
        state.dict[name] = value
