"""``scoped_session`` facts: the registries a module defines, whether their ``remove()``
is reached when something raises, and uses of thread-local registries.

The project-wide half ("is ``.remove()`` called on this registry anywhere?") lives in
:meth:`ProjectIndex.registry_released`, which scans the project modules that spell
the registry by one of its names.
Facts, no policy: the SES3xx rules decide what to report.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import libcst as cst

from sessionlint.analysis.kinds import Kind
from sessionlint.analysis.project import HOOK_METHODS, HOOK_REGISTRARS, HOOK_SIGNALS
from sessionlint.analysis.scope import Resolver, Scope, dotted, strip_await
from sessionlint.analysis.sqla import CLOSE_METHODS, ROLLBACK_METHODS
from sessionlint.analysis.sessions import TxAnalyzer
from sessionlint.analysis.walk import SCOPE_NODES, children, scope_nodes_of, walk, walk_scope

_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})
_QUIET_CALLS = frozenset({"print"})
# Uses of a registry that are not "work in this task's session".
_REGISTRY_HOUSEKEEPING = frozenset({"remove", "configure", "query_property", "registry", "session_factory"})


@dataclass(frozen=True, slots=True)
class RegistryDef:
    """``name = scoped_session(...)`` at module level."""

    name: str
    call: cst.Call
    kind: Kind


def module_registries(resolver: Resolver) -> Iterator[RegistryDef]:
    """Registries assigned to a name at module level (also inside if/try/with blocks)."""
    scope = resolver.scope(resolver.module)
    for statement in _top_level(resolver.module.body):
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Assign) and len(small.targets) == 1:
                target: cst.BaseExpression = small.targets[0].target
                value: cst.BaseExpression | None = small.value
            elif isinstance(small, cst.AnnAssign):
                target, value = small.target, small.value
            else:
                continue
            if not isinstance(target, cst.Name) or not isinstance(value, cst.Call):
                continue
            made = resolver.call_result_kind(value, scope)
            if made is None or made.tag != "registry":
                continue
            named = resolver.index.kind_of(f"{resolver.facts.name}.{target.value}")
            yield RegistryDef(target.value, value, named if named is not None and named.tag == "registry" else made)


def instance_registries(resolver: Resolver, cls: cst.ClassDef) -> Iterator[RegistryDef]:
    """Registries a method of ``cls`` builds and stores on ``self``
    (``self._session_factory = scoped_session(sessionmaker(...))``); ``name`` is the
    attribute."""
    for method in cls.body.body:
        if not isinstance(method, cst.FunctionDef):
            continue
        scope = resolver.scope(method)
        for node in walk_scope(method.body):
            if type(node) is cst.Assign and len(node.targets) == 1:
                target: cst.BaseExpression = node.targets[0].target
                value: cst.BaseExpression | None = node.value
            elif type(node) is cst.AnnAssign:
                target, value = node.target, node.value
            else:
                continue
            if not (
                isinstance(target, cst.Attribute)
                and isinstance(target.value, cst.Name)
                and target.value.value == "self"
                and isinstance(value, cst.Call)
            ):
                continue
            made = resolver.call_result_kind(value, scope)
            if made is not None and made.tag == "registry" and not _handed_out(cls, f"self.{target.attr.value}"):
                yield RegistryDef(target.attr.value, value, made)


def _handed_out(cls: cst.ClassDef, key: str) -> bool:
    """A method passes ``self.<attr>`` (``key``) to a call: whoever receives it (a
    worker that removes its parameter, a framework) may remove it."""
    for node in walk(cls):
        if type(node) is not cst.Arg:
            continue
        values = [e.value for e in node.value.elements] if isinstance(node.value, (cst.Tuple, cst.List)) else [node.value]
        if any(dotted(value) == key for value in values):  # ``args=(self.registry, urls)`` too
            return True
    return False


def _top_level(body: Sequence[cst.BaseStatement]) -> Iterator[cst.BaseStatement]:
    for node in body:
        yield node
        if isinstance(node, cst.If):
            yield from _top_level(_suite(node.body))
            orelse = node.orelse
            while isinstance(orelse, cst.If):
                yield from _top_level(_suite(orelse.body))
                orelse = orelse.orelse
            if isinstance(orelse, cst.Else):
                yield from _top_level(_suite(orelse.body))
        elif isinstance(node, (cst.Try, cst.TryStar)):
            yield from _top_level(_suite(node.body))
            for handler in node.handlers:
                yield from _top_level(_suite(handler.body))
            if node.orelse is not None:
                yield from _top_level(_suite(node.orelse.body))
            if node.finalbody is not None:
                yield from _top_level(_suite(node.finalbody.body))
        elif isinstance(node, cst.With):
            yield from _top_level(_suite(node.body))


def _suite(suite: cst.BaseSuite) -> list[cst.BaseStatement]:
    if isinstance(suite, cst.IndentedBlock):
        return list(suite.body)
    assert isinstance(suite, cst.SimpleStatementSuite)
    return [cst.SimpleStatementLine(body=suite.body)]


def is_thread_local(kind: Kind | None) -> bool:
    """A ``scoped_session`` registry keyed by thread (no ``scopefunc``)."""
    return kind is not None and kind.tag == "registry" and not kind.is_async and not kind.scopefunc


# -- SES302 ----------------------------------------------------------------------------


def registry_calls(tx: TxAnalyzer, fn: cst.FunctionDef, method: str) -> Iterator[tuple[cst.Call, str, Kind]]:
    """``<registry>.<method>(...)`` calls in ``fn``'s own body: (call, registry spelling, kind).
    Registries a framework removes itself (Flask-SQLAlchemy's ``db.session``) are left
    out: their lifetime is not the code's to manage."""
    scope = tx.function(fn).scope
    for sub in scope_nodes_of(fn.body, cst.Call):
        if isinstance(sub, cst.Call) and isinstance(sub.func, cst.Attribute) and sub.func.attr.value == method:
            kind = tx.resolver.kind(sub.func.value, scope)
            key = dotted(sub.func.value)
            if kind is not None and kind.tag == "registry" and not kind.managed and key is not None:
                yield sub, key, kind


def is_teardown_hook(fn: cst.FunctionDef) -> bool:
    """A function decorated as a teardown hook (``@app.teardown_appcontext``,
    ``@task_postrun.connect``, ``@atexit.register``), or named as one a framework calls
    (``tearDown``, ``on_finish``). See ``ProjectIndex.registry_torn_down``."""
    if fn.name.value in HOOK_METHODS:
        return True
    for decorator in fn.decorators:
        target = decorator.decorator.func if isinstance(decorator.decorator, cst.Call) else decorator.decorator
        if not isinstance(target, cst.Attribute):
            continue
        owner = (dotted(target.value) or "").rsplit(".", 1)[-1]
        attr = target.attr.value
        if (attr == "connect" and owner in HOOK_SIGNALS) or (attr == "register" and owner == "atexit"):
            return True
        if attr not in ("connect", "register") and attr in HOOK_REGISTRARS:
            return True
    return False


def used_after_remove(tx: TxAnalyzer, call: cst.Call, key: str, fn: cst.FunctionDef) -> bool:
    """The registry is used again after this ``remove()`` in the function (``remove();
    Session.configure(bind=engine)`` in a test's setup): a reset of the thread's
    session, not the cleanup at the end of a unit of work."""
    current: cst.CSTNode = call
    for ancestor in tx.ancestors(call, fn):
        if isinstance(ancestor, cst.IndentedBlock):
            body = list(ancestor.body)
            position = next((i for i, statement in enumerate(body) if statement is current), None)
            if position is not None and any(tx.uses(statement, key, fn) for statement in body[position + 1 :]):
                return True
        current = ancestor
    return False


def remove_guaranteed(tx: TxAnalyzer, call: cst.Call, key: str, fn: cst.FunctionDef) -> bool:
    """Whether the ``remove()`` call runs even when something before it raises: it is
    in a ``finally``, in an ``except`` (the error path itself), or nothing before it in
    the function may raise (a teardown hook), or what may raise is caught by an
    ``except`` that removes too."""
    unguarded = False
    current: cst.CSTNode = call
    for ancestor in tx.ancestors(call, fn):
        if isinstance(ancestor, cst.Finally):
            return True
        if isinstance(ancestor, (cst.ExceptHandler, cst.ExceptStarHandler)):
            return True
        if isinstance(ancestor, (cst.IndentedBlock, cst.SimpleStatementLine, cst.SimpleStatementSuite)):
            for sibling in ancestor.body:
                if sibling is current:
                    break
                if _may_raise(tx, sibling, key, fn):
                    unguarded = True
        elif isinstance(ancestor, cst.If) and current is not ancestor.test:
            unguarded = unguarded or _may_raise(tx, ancestor.test, key, fn)
        elif isinstance(ancestor, cst.While) and current is not ancestor.test:
            unguarded = unguarded or _may_raise(tx, ancestor.test, key, fn)
        elif isinstance(ancestor, cst.For) and current is not ancestor.iter:
            unguarded = unguarded or _may_raise(tx, ancestor.iter, key, fn)
        elif isinstance(ancestor, cst.With) and current is ancestor.body:
            unguarded = unguarded or any(_may_raise(tx, item.item, key, fn) for item in ancestor.items)
        elif isinstance(ancestor, (cst.Try, cst.TryStar)):
            covered = _handlers_remove(tx, ancestor, key, fn)
            if current is ancestor.body and covered:
                unguarded = False
            elif ancestor.orelse is not None and current is ancestor.orelse:
                if _may_raise(tx, ancestor.body, key, fn) and not covered:
                    unguarded = True
                elif covered:
                    unguarded = False
        current = ancestor
    return not unguarded


def _handlers_remove(tx: TxAnalyzer, node: cst.Try | cst.TryStar, key: str, fn: cst.FunctionDef) -> bool:
    """A catch-all ``except`` of this ``try`` removes the registry too."""
    for handler in node.handlers:
        if not tx.catches_everything(handler):
            continue
        for sub in walk_scope(handler.body):
            if (
                isinstance(sub, cst.Attribute)
                and sub.attr.value == "remove"
                and dotted(sub.value) == key
            ):
                return True
    return False


def _may_raise(tx: TxAnalyzer, node: cst.CSTNode, key: str, fn: cst.FunctionDef) -> bool:
    """Whether evaluating ``node`` may raise: a call (other than cleanup calls, logging
    and ``print``), ``raise``, ``assert``, or a ``try`` whose catch-all handlers do not
    let anything out."""
    if isinstance(node, (cst.Try, cst.TryStar)) and any(tx.catches_everything(h) for h in node.handlers):
        parts: list[cst.CSTNode] = [h.body for h in node.handlers]
        if node.orelse is not None:
            parts.append(node.orelse.body)
        if node.finalbody is not None:
            parts.append(node.finalbody.body)
        return any(_may_raise(tx, part, key, fn) for part in parts)
    stack: list[cst.CSTNode] = [node]
    while stack:
        sub = stack.pop()
        if isinstance(sub, SCOPE_NODES) and sub is not node:
            continue
        if isinstance(sub, (cst.Raise, cst.Assert)):
            return True
        if isinstance(sub, (cst.Try, cst.TryStar)) and sub is not node:
            if _may_raise(tx, sub, key, fn):
                return True
            continue
        if isinstance(sub, cst.Call) and not _quiet_call(sub):
            return True
        stack.extend(children(sub))
    return False


def _quiet_call(call: cst.Call) -> bool:
    """Calls assumed not to raise: cleanup (``close``/``rollback``/``remove``), logging,
    ``print``."""
    func = strip_await(call.func)
    if isinstance(func, cst.Attribute):
        if func.attr.value in CLOSE_METHODS | ROLLBACK_METHODS | {"remove"} | _LOG_METHODS:
            return True
        return False
    return isinstance(func, cst.Name) and func.value in _QUIET_CALLS


# -- SES303 ----------------------------------------------------------------------------


def thread_local_uses(resolver: Resolver, fn: cst.FunctionDef) -> Iterator[tuple[cst.BaseExpression, str]]:
    """First use of each thread-local registry in ``fn``'s own body: calling it, or an
    attribute of it (``db_session.get(...)``), other than ``remove()``/``configure()``.
    Passing the registry on (``to_thread(work, db_session)``) is not a use here."""
    scope: Scope = resolver.scope(fn)
    seen: set[str] = set()
    for sub in walk_scope(fn.body):
        target: cst.BaseExpression | None = None
        if isinstance(sub, cst.Attribute) and sub.attr.value not in _REGISTRY_HOUSEKEEPING:
            target = sub.value
        elif isinstance(sub, cst.Call):
            target = sub.func
        if target is None or not isinstance(target, (cst.Name, cst.Attribute)):
            continue
        key = dotted(target)
        if key is None or key in seen:
            continue
        if is_thread_local(resolver.kind(target, scope)):
            seen.add(key)
            yield target, key
