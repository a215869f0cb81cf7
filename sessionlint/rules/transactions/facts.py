"""SES2xx facts: which ``except`` handlers swallow a database error from session
work, and which session blocks write without ever committing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import libcst as cst

from sessionlint.analysis.entry import starts_unit_of_work
from sessionlint.analysis.kinds import Kind
from sessionlint.analysis.scope import Resolver, Scope, dotted, strip_await
from sessionlint.analysis.sessions import RESET_METHODS, RAISE, RESET, SessionRef, TxAnalyzer, block_of, own_nodes
from sessionlint.analysis.walk import SCOPE_NODES, scope_nodes_of, walk

# Session methods that talk to the database, so a database error can come out of them
# (and leave the transaction needing a rollback). ``add``/``delete`` only stage changes;
# they fail at the next flush, which is one of these. ``exec`` is SQLModel's ``execute``.
WORK_METHODS = frozenset(
    {
        "flush", "commit", "execute", "exec", "scalar", "scalars", "get", "get_one", "query",
        "refresh", "bulk_save_objects", "bulk_insert_mappings", "bulk_update_mappings",
    }
)
# Session methods that stage or perform writes (SES202).
WRITE_METHODS = frozenset(
    {"add", "add_all", "delete", "merge", "bulk_save_objects", "bulk_insert_mappings", "bulk_update_mappings"}
)
# Core statement constructors that write.
_DML = frozenset({"insert", "update", "delete", "upsert"})
_DML_PREFIXES = ("insert", "update", "delete", "merge", "upsert", "replace", "truncate")


def is_write_statement(expr: cst.BaseExpression, resolver: Resolver, scope: Scope, depth: int = 0) -> bool:
    """A Core DML statement: ``insert(T)...``, ``update(T).where(...)``, ``table.delete()``,
    ``text("UPDATE ...")``, or a local name assigned one."""
    expr = strip_await(expr)
    if isinstance(expr, cst.Name) and depth < 3:
        for value in scope.assigned.get(expr.value, ()):
            if is_write_statement(value, resolver, scope, depth + 1):
                return True
        return False
    root = expr
    while isinstance(root, cst.Call) and isinstance(root.func, cst.Attribute):
        if root.func.attr.value in _DML and not isinstance(root.func.value, cst.Call):
            return True  # ``table.insert()``, ``Model.__table__.update()``
        root = root.func.value
    if not isinstance(root, cst.Call):
        return False
    qname = resolver.qualify(root.func, scope) or ""
    last = qname.rsplit(".", 1)[-1]
    if qname.startswith("sqlalchemy") and last in _DML:
        return True
    if qname.startswith("sqlalchemy") and last == "text" and root.args:
        literal = root.args[0].value
        if isinstance(literal, cst.SimpleString):
            text = literal.evaluated_value
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            return text.lstrip().lower().startswith(_DML_PREFIXES)
    return False


# -- SES201: handlers that swallow a database error ------------------------------------


def _begin_item(item: cst.WithItem, key: str) -> bool:
    """``<key>.begin()`` / ``<key>.begin_nested()`` as a with item."""
    expr = strip_await(item.item)
    return (
        isinstance(expr, cst.Call)
        and isinstance(expr.func, cst.Attribute)
        and expr.func.attr.value in ("begin", "begin_nested")
        and dotted(expr.func.value) == key
    )


def _inside_transactionblock_of(node: cst.CSTNode, key: str, tx: TxAnalyzer, fn: cst.FunctionDef, stop: cst.CSTNode | None = None) -> bool:
    """Whether ``node`` sits in ``with <key>.begin():``/``begin_nested()`` (or in the
    ``with Factory.begin() as <key>:`` that binds it), below ``stop`` if given."""
    for ancestor in tx.ancestors(node, fn):
        if ancestor is stop:
            return False
        if isinstance(ancestor, cst.With):
            for item in ancestor.items:
                if _begin_item(item, key):
                    return True
                if (
                    item.asname is not None
                    and isinstance(item.asname.name, cst.Name)
                    and item.asname.name.value == key
                    and tx.creates_session(item.item, tx.function(fn).scope) is not None
                    and (tx.creates_session(item.item, tx.function(fn).scope) or Kind("")).api == "begin"
                ):
                    return True
    return False


def swallowing_handlers(tx: TxAnalyzer, fn: cst.FunctionDef) -> Iterator[tuple[cst.ExceptHandler | cst.ExceptStarHandler, SessionRef]]:
    """``except`` clauses (of ``try`` statements in ``fn``'s own body) that catch a
    database error raised by session work in their ``try``, and on some path neither
    roll back nor re-raise while that session lives on."""
    scope = tx.function(fn).scope
    unit_of_work: bool | None = None
    for node in scope_nodes_of(fn.body, cst.Try, cst.TryStar):
        assert isinstance(node, (cst.Try, cst.TryStar))
        refs: dict[str, SessionRef] = {}
        for call in tx.session_calls(node.body, fn):
            if call.method not in WORK_METHODS or call.ref.key in refs:
                continue
            if _inside_transactionblock_of(call.call, call.ref.key, tx, fn, stop=node):
                continue  # the savepoint/transaction block rolls back on the way out
            if call.ref.kind.managed and _inside_app_context(call.call, tx, fn, node):
                continue  # leaving ``with app.app_context():`` removed ``db.session``
            refs[call.ref.key] = call.ref
        if not refs:
            continue
        if node.finalbody is not None and tx.resets(node.finalbody, fn):
            continue
        for handler in node.handlers:
            if not tx.catches_db_errors(handler, scope):
                continue
            modes = tx.exits(block_of(handler.body), fn) - {RAISE, RESET}
            if not modes:
                continue
            for ref in refs.values():
                if ref.binding and all(tx.is_within(b, node, fn) for b in ref.binding):
                    continue  # created inside the try: it does not outlive it
                if _inside_transactionblock_of(node, ref.key, tx, fn):
                    continue
                long_lived = ref.long_lived
                if long_lived and ref.kind.managed:
                    # Flask-SQLAlchemy removes ``db.session`` when the request or CLI
                    # command's app context ends: in the function that is that unit of
                    # work, only a use later in the function meets the failed session.
                    if unit_of_work is None:
                        unit_of_work = starts_unit_of_work(tx.resolver, fn)
                    long_lived = not unit_of_work
                if long_lived or tx.used_after(node, modes, ref, fn) or _retried_in_handler(tx, handler, ref.key, fn):
                    yield handler, ref
                    break


def _inside_app_context(call: cst.Call, tx: TxAnalyzer, fn: cst.FunctionDef, stop: cst.CSTNode) -> bool:
    """Within a ``with <app>.app_context():`` (or ``test_request_context()``) inside
    ``stop``: Flask-SQLAlchemy removes its session when that context ends, so the
    ``except`` after it meets a fresh one."""
    for ancestor in tx.ancestors(call, fn):
        if ancestor is stop:
            return False
        if isinstance(ancestor, cst.With):
            for item in ancestor.items:
                inner = item.item
                if (
                    isinstance(inner, cst.Call)
                    and isinstance(inner.func, cst.Attribute)
                    and inner.func.attr.value in ("app_context", "test_request_context", "request_context")
                ):
                    return True
    return False


def _retried_in_handler(tx: TxAnalyzer, handler: cst.ExceptHandler | cst.ExceptStarHandler, key: str, fn: cst.FunctionDef) -> bool:
    """The handler itself does session work again (a retry, an error log row) before
    any statement of it rolls back: that work meets the failed transaction."""
    for statement in handler.body.body:
        calls = [c for c in tx.session_calls(statement, fn) if c.ref.key == key]
        if any(c.method in RESET_METHODS for c in calls):
            return False
        if any(c.method in WORK_METHODS or c.method in WRITE_METHODS for c in calls):
            return True
    return False


# -- SES202: session blocks that write and never commit --------------------------------


def _names_escape(tx: TxAnalyzer, body: cst.CSTNode, key: str, fn: cst.FunctionDef) -> bool:
    """The session is referenced other than through its methods: passed to a call,
    returned, yielded, stored, aliased, used by a nested function or lambda (someone
    else may commit it)."""
    for sub in walk(body):
        if isinstance(sub, SCOPE_NODES) and sub is not body:
            if any(isinstance(n, cst.Name) and n.value == key for n in walk(sub)):
                return True
            continue
        if isinstance(sub, cst.Name) and sub.value == key:
            parent = tx.parent(sub, fn)
            if isinstance(parent, cst.Attribute) and parent.value is sub:
                continue
            if isinstance(parent, (cst.AsName, cst.AssignTarget)):
                continue  # the binding itself
            return True
    return False


def _session_block_facts(tx: TxAnalyzer, body: cst.CSTNode, key: str, fn: cst.FunctionDef) -> tuple[bool, bool]:
    """(writes, commits or rolls back on purpose) for session ``key`` in ``body``."""
    writes = settles = False
    scope = tx.function(fn).scope
    for sub in own_nodes(body):
        if isinstance(sub, cst.Attribute) and dotted(sub.value) == key:
            if sub.attr.value in ("commit", "begin", "rollback"):
                settles = True
        if isinstance(sub, cst.Call) and isinstance(sub.func, cst.Attribute) and dotted(sub.func.value) == key:
            method = sub.func.attr.value
            if method in WRITE_METHODS:
                writes = True
            elif method == "execute" and sub.args and is_write_statement(sub.args[0].value, tx.resolver, scope):
                writes = True
    return writes, settles


def _joins_external_transaction(tx: TxAnalyzer, call: cst.Call, scope: Scope) -> bool:
    """``Session(bind=connection)`` / ``join_transaction_mode=...``: the caller owns the
    transaction (the test-suite pattern), so not committing is the point."""
    for arg in call.args:
        keyword = arg.keyword.value if arg.keyword is not None else None
        if keyword in ("join_transaction_mode", "autocommit"):
            return True
        if keyword is None or keyword in ("bind", "binds"):
            # Bound to anything but a known engine: it may be a caller's connection.
            kind = tx.resolver.kind(arg.value, scope)
            if kind is None or kind.tag != "engine":
                return True
    return False


def uncommitted_blocks(tx: TxAnalyzer, fn: cst.FunctionDef, flow_sites: Iterable[tuple[cst.Call, str]]) -> Iterator[tuple[cst.CSTNode, str]]:
    """(node to report, session name) for ``with Factory() as s:`` blocks, and for
    sessions created and closed in ``fn`` (``flow_sites``: (creating call, name) of
    each), that write and never commit."""
    facts = tx.function(fn)
    scope = facts.scope
    for block in facts.withs:
        # A lent session's lender may commit when the block ends (``session_scope()``).
        if block.lent or block.kind.scoped or block.kind.api == "begin":
            continue
        node, key = block.node, block.name
        if any(_begin_item(other, key) for other in node.items):
            continue
        if _joins_external_transaction(tx, block.call, scope):
            continue
        writes, settles = _session_block_facts(tx, node.body, key, fn)
        if writes and not settles and not _names_escape(tx, node.body, key, fn):
            yield node, key
    for call, name in flow_sites:
        bindings = list(tx._bindings(facts, name))
        if len(bindings) != 1 or name in facts.with_sessions or name in scope.params:
            continue
        if _joins_external_transaction(tx, call, scope):
            continue
        writes, settles = _session_block_facts(tx, fn.body, name, fn)
        if writes and not settles and not _names_escape(tx, fn.body, name, fn):
            yield call, name


# A session held on ``self`` (a repository, a data-access object) is committed by the
# methods that mean to: when one public method writes through it and commits, a sibling
# that writes the same way and never commits is the one that forgot (its writes go when
# the owner closes the session). Methods that flush, begin or roll back settle it on
# purpose; a private helper, or a method another method calls, leaves it to its caller.
_SETTLES = frozenset({"commit", "begin", "begin_nested", "rollback", "flush"})


@dataclass
class _MethodWrites:
    first_write: cst.Call | None = None
    settles: bool = False
    commits: bool = False


def _attribute_escapes(tx: TxAnalyzer, body: cst.CSTNode, key: str, fn: cst.FunctionDef) -> bool:
    """``self.<attr>`` (``key``) referenced other than through its methods: passed to
    a call, returned, aliased, used by a nested function."""
    for sub in walk(body):
        if isinstance(sub, cst.Attribute) and dotted(sub) == key:
            parent = tx.parent(sub, fn)
            if isinstance(parent, cst.Attribute) and parent.value is sub:
                continue
            if isinstance(parent, cst.AssignTarget):
                continue
            return True
    return False


def _writes_through_self(methods: list[cst.FunctionDef]) -> bool:
    """A cheap syntactic test first: ``self.<attr>.add(...)``/``.execute(...)``..."""
    for node in (call for method in methods for call in scope_nodes_of(method.body, cst.Call)):
        assert isinstance(node, cst.Call)
        if (
            type(node.func) is cst.Attribute
            and (node.func.attr.value in WRITE_METHODS or node.func.attr.value in ("execute", "exec"))
            and type(node.func.value) is cst.Attribute
            and type(node.func.value.value) is cst.Name
            and node.func.value.value.value == "self"
        ):
            return True
    return False


def uncommitted_methods(tx: TxAnalyzer, cls: cst.ClassDef) -> Iterator[tuple[cst.Call, str, str, str]]:
    """(first write, ``self.<attr>``, method, a sibling that commits) for public methods
    of ``cls`` that write through a session on ``self`` and never settle it, where a
    sibling method writes through it and commits."""
    methods = [m for m in cls.body.body if isinstance(m, cst.FunctionDef)]
    if len(methods) < 2 or not _writes_through_self(methods) or not tx.class_attrs(cls):
        return  # no session on ``self`` (most classes: models, schemas, services of other kinds)
    called = {
        sub.func.attr.value
        for m in methods
        for sub in walk(m)
        if isinstance(sub, cst.Call) and isinstance(sub.func, cst.Attribute) and dotted(sub.func.value) in ("self", "cls")
    }
    writes: dict[str, dict[str, _MethodWrites]] = {}
    for method in methods:
        scope = tx.function(method).scope
        facts: dict[str, _MethodWrites] = {}
        for call in tx.session_calls(method.body, method):
            if call.ref.where != "self":
                continue
            entry = facts.setdefault(call.ref.key, _MethodWrites())
            if call.method in _SETTLES:
                entry.settles = True
                entry.commits = entry.commits or call.method in ("commit", "begin")
            elif call.method in WRITE_METHODS or (
                call.method in ("execute", "exec") and call.call.args and is_write_statement(call.call.args[0].value, tx.resolver, scope)
            ):
                entry.first_write = entry.first_write or call.call
        for key, entry in facts.items():
            if entry.first_write is not None and not entry.settles and _attribute_escapes(tx, method.body, key, method):
                entry.settles = True  # handed on: its receiver may commit
        writes[method.name.value] = facts
    settling_helpers = {name for name, facts in writes.items() if any(e.settles for e in facts.values())}
    for method in methods:
        name = method.name.value
        if name.startswith("_") or name in called:
            continue
        if any(isinstance(sub, cst.Call) and isinstance(sub.func, cst.Attribute) and sub.func.attr.value in settling_helpers
               and dotted(sub.func.value) == "self" for sub in walk(method)):
            continue  # ``self._commit()``
        for key, entry in writes[name].items():
            if entry.first_write is None or entry.settles:
                continue
            sibling = next(
                (other for other, facts in writes.items()
                 if other != name and key in facts and facts[key].first_write is not None and facts[key].commits),
                None,
            )
            if sibling is not None:
                yield entry.first_write, key, name, sibling
