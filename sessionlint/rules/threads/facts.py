"""Values that cross into another thread or process, and sessions that live at import time.

*Hand-off calls* start work elsewhere: ``threading.Thread``/``Timer``,
``multiprocessing.Process``, ``_thread.start_new_thread``, ``Executor.submit/map``
(an executor bound by ``with ThreadPoolExecutor() as ex:``, ``ex = ...``, a module
global, or an annotation), ``multiprocessing`` pools' ``apply``/``apply_async``/
``map``/``starmap``/``imap``..., ``asyncio.to_thread`` and ``loop.run_in_executor``.
All are matched by qualified name. For each, which expressions are *shipped* to the
other side (arguments), and which local names the shipped callable *captures* (a
lambda, a nested ``def``, ``functools.partial``, a bound method of a session).

Also: session instances created while a module or class body runs (or as a default
argument), which every thread and request then shares. Facts only; SES401/SES402
decide what to report.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import libcst as cst

from sessionlint.analysis.calls import (
    CallIndex,
    call_index,
    is_read,
    keyword_args,
    module_assignments,
    per_module,
)
from sessionlint.analysis.context import FileContext
from sessionlint.analysis.scope import Resolver, Scope, dotted, strip_await
from sessionlint.analysis.sqla import CLOSE_METHODS
from sessionlint.analysis.sessions import analyzer_for
from sessionlint.analysis.walk import children, walk_scope

# Constructors that run a callable elsewhere: qualified name -> (worker, positions and
# keywords of: callable, args tuple, kwargs dict).
_Spec = tuple[str, tuple[int, str], tuple[int, str], tuple[int, str]]
_STARTERS: dict[str, _Spec] = {
    "threading.Thread": ("thread", (1, "target"), (3, "args"), (4, "kwargs")),
    "threading.Timer": ("thread", (1, "function"), (2, "args"), (3, "kwargs")),
    "multiprocessing.Process": ("process", (1, "target"), (3, "args"), (4, "kwargs")),
    "multiprocessing.context.Process": ("process", (1, "target"), (3, "args"), (4, "kwargs")),
    "_thread.start_new_thread": ("thread", (0, "function"), (1, "args"), (2, "kwargs")),
}
_THREAD_EXECUTORS = frozenset(
    {
        "concurrent.futures.ThreadPoolExecutor",
        "concurrent.futures.thread.ThreadPoolExecutor",
        "concurrent.futures.Executor",
        "concurrent.futures._base.Executor",
    }
)
_PROCESS_EXECUTORS = frozenset(
    {"concurrent.futures.ProcessPoolExecutor", "concurrent.futures.process.ProcessPoolExecutor"}
)
_THREAD_POOLS = frozenset({"multiprocessing.pool.ThreadPool", "multiprocessing.dummy.Pool"})
_PROCESS_POOLS = frozenset({"multiprocessing.Pool", "multiprocessing.pool.Pool"})
_POOL_METHODS = frozenset(
    {"apply", "apply_async", "map", "map_async", "imap", "imap_unordered", "starmap", "starmap_async"}
)
# Keywords of pool methods that are not shipped to a worker.
_POOL_LOCAL_KEYWORDS = frozenset({"callback", "error_callback", "chunksize", "timeout"})
_LOOP_FACTORIES = ("asyncio.", "uvloop.")
_PARTIALS = frozenset({"functools.partial"})
_REPEATERS = frozenset({"itertools.repeat"})


@dataclass(frozen=True, slots=True)
class Handoff:
    """A call that runs ``callable`` in another thread or process with ``shipped`` values."""

    call: cst.Call
    via: str  # how to name it in a message: "threading.Thread", "executor.submit", ...
    worker: str  # "thread" | "process"
    callable: cst.BaseExpression | None
    shipped: tuple[cst.BaseExpression, ...]


@dataclass(frozen=True, slots=True)
class Shared:
    """A session or connection that a hand-off call gives to the other side."""

    handoff: Handoff
    var: str
    kind: str  # "session" | "connection"
    captured: bool  # reached through a closure rather than as an argument


class ThreadFacts:
    """Hand-offs and what they share, for one file."""

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self.resolver: Resolver = ctx.resolver
        self.index: CallIndex = call_index(ctx.module)

    # -- hand-off recognition ---------------------------------------------------------

    def handoffs(self) -> Iterator[tuple[Handoff, Scope]]:
        for scoped in self.index.calls:
            scope = self.resolver.scope(scoped.scope)
            found = self.handoff(scoped.call, scope)
            if found is not None:
                yield found, scope

    def handoff(self, call: cst.Call, scope: Scope) -> Handoff | None:
        func = call.func
        qname = self.resolver.qualify(func, scope)
        if qname is None and isinstance(func, cst.Attribute) and func.attr.value in ("Process", "Pool"):
            # ``multiprocessing.get_context("spawn").Process(...)``
            if self.origin(func.value, scope) == "multiprocessing.get_context" and func.attr.value == "Process":
                qname = "multiprocessing.Process"
        if qname in _STARTERS:
            worker, (target_pos, target_kw), (args_pos, args_kw), (kwargs_pos, kwargs_kw) = _STARTERS[qname]
            target = _argument(call, target_pos, target_kw)
            shipped: list[cst.BaseExpression] = []
            for position, keyword in ((args_pos, args_kw), (kwargs_pos, kwargs_kw)):
                value = _argument(call, position, keyword)
                if value is not None:
                    shipped.append(value)
            return Handoff(call, qname, worker, target, tuple(shipped))
        if qname is not None and qname.rpartition(".")[2][:1].isupper():
            # ``Loader(session, rows)`` where ``class Loader(threading.Thread)``: the
            # constructor's arguments go to the thread (or process) it starts.
            root = self.resolver.index.base_in(qname, _STARTERS)
            if root is not None:
                worker = _STARTERS[root][0]
                arguments = tuple(arg.value for arg in call.args)
                return Handoff(call, qname.rpartition(".")[2], worker, None, arguments)
        if qname == "asyncio.to_thread":
            return self._callable_first(call, "asyncio.to_thread", "thread", skip=0)
        if not isinstance(func, cst.Attribute):
            return None
        method = func.attr.value
        if method == "run_in_executor":
            origin = self.origin(func.value, scope)
            if origin is not None and not origin.startswith(_LOOP_FACTORIES):
                return None  # some other object's run_in_executor
            return self._callable_first(call, "loop.run_in_executor", "thread", skip=1)
        if method in ("submit", "map"):
            origin = self.origin(func.value, scope)
            if origin in _THREAD_EXECUTORS or origin in _PROCESS_EXECUTORS:
                worker = "process" if origin in _PROCESS_EXECUTORS else "thread"
                return self._callable_first(call, f"executor.{method}", worker, skip=0)
        if method in _POOL_METHODS:
            origin = self.origin(func.value, scope)
            if origin in _THREAD_POOLS or origin in _PROCESS_POOLS:
                worker = "process" if origin in _PROCESS_POOLS else "thread"
                return self._callable_first(call, f"Pool.{method}", worker, skip=0)
        return None

    def _callable_first(self, call: cst.Call, via: str, worker: str, skip: int) -> Handoff:
        """``f(fn, *args, **kwargs)`` (after ``skip`` leading arguments)."""
        positional = [a for a in call.args if a.keyword is None]
        target: cst.BaseExpression | None = None
        shipped: list[cst.BaseExpression] = []
        for i, arg in enumerate(positional):
            if i < skip:
                continue
            if i == skip and not arg.star:
                target = arg.value
            else:
                shipped.append(arg.value)
        for arg in call.args:
            if arg.keyword is None:
                continue
            name = arg.keyword.value
            if name in ("func", "fn") and target is None:
                target = arg.value
            elif name not in _POOL_LOCAL_KEYWORDS:
                shipped.append(arg.value)
        return Handoff(call, via, worker, target, tuple(shipped))

    def origin(self, expr: cst.BaseExpression, scope: Scope, depth: int = 0) -> str | None:
        """The qualified name of what produced a value: the callee of the call it came
        from (``ThreadPoolExecutor(...)`` -> ``concurrent.futures.ThreadPoolExecutor``),
        or the class in its annotation. None when not known."""
        expr = strip_await(expr)
        if depth > 4:
            return None
        if isinstance(expr, cst.Call):
            func = expr.func
            qname = self.resolver.qualify(func, scope)
            if qname is None and isinstance(func, cst.Attribute) and func.attr.value == "Pool":
                if self.origin(func.value, scope, depth + 1) == "multiprocessing.get_context":
                    return "multiprocessing.Pool"
            return qname
        if isinstance(expr, cst.Attribute):
            # ``self.executor`` in a method: what the class assigns to it.
            cls = _method_class(expr, scope)
            if cls is None:
                return None
            attributes = self.resolver.instance_attributes(cls)
            for value, where in attributes.assigned.get(expr.attr.value, ()):
                found = self.origin(value, where, depth + 1)
                if found is not None:
                    return found
            annotation = attributes.annotations.get(expr.attr.value)  # executor: ThreadPoolExecutor
            if annotation is not None:
                return self.resolver.qualify(_unwrap_optional(annotation), self.resolver.scope(self.resolver.module))
            return None
        if not isinstance(expr, cst.Name):
            return None
        name = expr.value
        owner = self.resolver.owner(name, scope)
        if owner is None:
            return self._module_origin(name, scope, depth)
        if name in owner.imports:
            return None
        annotation = owner.annotations.get(name)
        if annotation is not None:
            return self.resolver.qualify(_unwrap_optional(annotation), owner)
        for value in owner.assigned.get(name, ()):
            found = self.origin(value, owner, depth + 1)
            if found is not None:
                return found
        for item in owner.with_items.get(name, ()):
            found = self.origin(item, owner, depth + 1)
            if found is not None:
                return found
        return None

    def _module_origin(self, name: str, scope: Scope, depth: int) -> str | None:
        module_scope = self.resolver.scope(self.resolver.module)
        values = module_assignments(self.resolver.module).get(name)
        if values:
            return self.origin(values[0], module_scope, depth + 1)
        # An executor imported from another module of the project.
        qname = self.resolver.qualify(cst.Name(name), scope)
        if qname and "." in qname:
            module, attr = qname.rsplit(".", 1)
            facts = self.resolver.index.facts_for_module(module)
            if facts is not None:
                value = facts.values.get(attr)
                if value is not None and value.shape == "call":
                    return value.target
        return None

    # -- what is shared -------------------------------------------------------------------

    def shared(self, handoff: Handoff, scope: Scope) -> Iterator[Shared]:
        seen: set[str] = set()
        for expr in handoff.shipped:
            for carried in self._carried(expr, scope):
                found = self._carried_kind(carried, scope)
                if found is not None and found[0] not in seen:
                    seen.add(found[0])
                    yield Shared(handoff, found[0], found[1], captured=False)
            for lam in _lambdas(expr):
                yield from self._captured(handoff, lam, scope, seen)
        if handoff.callable is not None:
            yield from self._callable_shares(handoff, handoff.callable, scope, seen)

    def _callable_shares(
        self, handoff: Handoff, target: cst.BaseExpression, scope: Scope, seen: set[str], depth: int = 0
    ) -> Iterator[Shared]:
        target = strip_await(target)
        if isinstance(target, cst.Lambda):
            yield from self._captured(handoff, target, scope, seen)
        elif isinstance(target, cst.Call) and self.resolver.qualify(target.func, scope) in _PARTIALS:
            args = list(target.args)
            if args and args[0].keyword is None and not args[0].star:
                yield from self._callable_shares(handoff, args[0].value, scope, seen, depth + 1)
                args = args[1:]
            for arg in args:
                for carried in self._carried(arg.value, scope):
                    found = self._carried_kind(carried, scope)
                    if found is not None and found[0] not in seen:
                        seen.add(found[0])
                        yield Shared(handoff, found[0], found[1], captured=False)
        elif isinstance(target, cst.Attribute) and (cls := _method_class(target, scope)) is not None:
            yield from self._bound_method_shares(handoff, cls, target.attr.value, seen)
        elif (
            isinstance(target, cst.Attribute)
            and isinstance(target.value, cst.Attribute)
            and _method_class(target.value, scope) is not None
        ):
            # ``target=self.session.commit``
            found = self._carried_kind(target.value, scope)
            if found is not None and found[0] not in seen:
                seen.add(found[0])
                yield Shared(handoff, found[0], found[1], captured=False)
        elif isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name):
            # ``target=session.commit``: a bound method carries its session along.
            base = target.value.value
            kind = self.session_kind(base, scope, module_level_too=True)
            if kind is not None and base not in seen:
                seen.add(base)
                yield Shared(handoff, base, kind, captured=False)
        elif isinstance(target, cst.Name) and depth < 3:
            owner = self.resolver.owner(target.value, scope)
            if owner is not None and not isinstance(owner.node, cst.Module):
                for node in walk_scope(owner.node.body):
                    if isinstance(node, cst.FunctionDef) and node.name.value == target.value:
                        yield from self._captured(handoff, node, scope, seen)
                # ``job = functools.partial(render, session)`` / ``job = lambda: ...``
                for value in owner.assigned.get(target.value, ()):
                    yield from self._callable_shares(handoff, value, owner, seen, depth + 1)

    def _captured(
        self, handoff: Handoff, fn: cst.FunctionDef | cst.Lambda, scope: Scope, seen: set[str]
    ) -> Iterator[Shared]:
        outer = self.resolver.scope(fn).parent or scope
        for name in self._free_reads(fn):
            if name in seen:
                continue
            owner = self.resolver.owner(name, outer)
            if owner is None:
                continue  # a module global: SES402's business, not a closure
            if name == "self" and owner.cls is not None and owner.params[:1] == ["self"]:
                # ``lambda: self.session.get(...)``: the session attributes it reads.
                yield from self._self_sessions(handoff, owner.cls, [fn], seen)
                continue
            kind = self.session_kind(name, owner, module_level_too=False)
            if kind is not None:
                seen.add(name)
                yield Shared(handoff, name, kind, captured=True)

    def _bound_method_shares(
        self, handoff: Handoff, cls: cst.ClassDef, name: str, seen: set[str]
    ) -> Iterator[Shared]:
        """``target=self.load``: the session attributes ``load`` (and the methods of the
        class it calls on ``self``) reads but does not assign itself."""
        methods = {
            item.name.value: item
            for item in (cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ())
            if isinstance(item, cst.FunctionDef)
        }
        reached: list[cst.FunctionDef] = []
        pending = [name]
        while pending and len(reached) < 8:
            method = methods.get(pending.pop())
            if method is None or method in reached or not _is_instance_method(method):
                continue
            reached.append(method)
            for sub in walk_scope(method.body):
                if isinstance(sub, cst.Call):
                    called = _self_attr_name(sub.func)
                    if called is not None:
                        pending.append(called)
        yield from self._self_sessions(handoff, cls, reached, seen)

    def _self_sessions(
        self, handoff: Handoff, cls: cst.ClassDef, fns: Sequence[cst.FunctionDef | cst.Lambda], seen: set[str]
    ) -> Iterator[Shared]:
        """Session attributes read as ``self.<attr>`` in ``fns`` and assigned in none of them."""
        attrs = analyzer_for(self.resolver).class_attrs(cls)
        read: list[str] = []
        assigned: set[str] = set()
        for fn in fns:
            for sub in walk_scope(fn.body):
                if isinstance(sub, cst.Assign):
                    assigned.update(a for t in sub.targets if (a := _self_attr_name(t.target)) is not None)
                else:
                    attr = _self_attr_name(sub) if isinstance(sub, cst.Attribute) else None
                    if attr is not None and attr not in read:
                        read.append(attr)
        for attr in read:
            kind = attrs.get(attr)
            var = f"self.{attr}"
            if kind is not None and kind.tag == "session" and attr not in assigned and var not in seen:
                seen.add(var)
                yield Shared(handoff, var, "session", captured=True)

    def _free_reads(self, fn: cst.FunctionDef | cst.Lambda) -> list[str]:
        """Names ``fn`` reads that neither it nor a function nested in it binds."""
        out: list[str] = []
        comprehension_bound: set[str] = set()
        for sub, _scopes in _walk_with_scopes(fn):
            if isinstance(sub, cst.CompFor):
                comprehension_bound.update(_names_in(sub.target))
        for sub, scopes in _walk_with_scopes(fn):
            if not isinstance(sub, cst.Name) or not is_read(self.index, sub):
                continue
            if sub.value in comprehension_bound:
                continue
            if any(self.resolver.scope(s).binds(sub.value) for s in scopes):
                continue
            if sub.value not in out:
                out.append(sub.value)
        return out

    def _carried(self, expr: cst.BaseExpression, scope: Scope) -> Iterator[cst.Name | cst.Attribute]:
        """Names (and ``self.<attr>``) whose value ends up, as is, inside the value of ``expr``."""
        expr = strip_await(expr)
        if isinstance(expr, cst.Name):
            yield expr
        elif isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
            yield expr
        elif isinstance(expr, (cst.Tuple, cst.List, cst.Set)):
            for element in expr.elements:
                yield from self._carried(element.value, scope)
        elif isinstance(expr, cst.Dict):
            for entry in expr.elements:
                yield from self._carried(entry.value, scope)
        elif isinstance(expr, cst.BinaryOperation):  # [session] * n
            yield from self._carried(expr.left, scope)
            yield from self._carried(expr.right, scope)
        elif isinstance(expr, cst.IfExp):
            yield from self._carried(expr.body, scope)
            yield from self._carried(expr.orelse, scope)
        elif isinstance(expr, (cst.ListComp, cst.GeneratorExp, cst.SetComp)):
            bound = {n for sub in _comp_fors(expr.for_in) for n in _names_in(sub.target)}
            for name in self._carried(expr.elt, scope):
                if name.value not in bound:
                    yield name
        elif isinstance(expr, cst.Call):
            func = expr.func
            callee = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""
            qname = self.resolver.qualify(func, scope) or ""
            builtin = not qname and isinstance(func, cst.Name) and func.value in ("dict", "tuple", "list", "zip")
            if qname in _REPEATERS or builtin:
                for arg in expr.args:
                    yield from self._carried(arg.value, scope)
            elif callee[:1].isupper():  # Repository(session): an object holding it
                for arg in expr.args:
                    yield from self._carried(arg.value, scope)

    # -- sessions ------------------------------------------------------------------------

    def _carried_kind(self, carried: cst.Name | cst.Attribute, scope: Scope) -> tuple[str, str] | None:
        """(spelling, "session"/"connection") if what ``_carried`` found holds one."""
        if isinstance(carried, cst.Name):
            kind = self.session_kind(carried.value, scope, module_level_too=True)
            return (carried.value, kind) if kind is not None else None
        # ``self.session`` in a method: an attribute the class assigns a session to.
        if scope.cls is None or not scope.params or scope.params[0] != "self":
            return None
        attr = analyzer_for(self.resolver).class_attrs(scope.cls).get(carried.attr.value)
        return (f"self.{carried.attr.value}", "session") if attr is not None and attr.tag == "session" else None

    def session_kind(self, name: str, scope: Scope, module_level_too: bool) -> str | None:
        """"session"/"connection" if ``name`` (seen from ``scope``) holds one."""
        owner = self.resolver.owner(name, scope)
        if owner is None:
            if not module_level_too:
                return None
            kind = self.resolver.kind(cst.Name(name), self.resolver.scope(self.resolver.module))
            return kind.tag if kind is not None and kind.tag in ("session", "connection") else None
        if name in owner.imports:
            return None
        kind = self.resolver.local_kind(owner, name)  # assignments, annotations
        if kind is not None and kind.tag in ("session", "connection"):
            return kind.tag
        if isinstance(owner.node, cst.FunctionDef) and name in owner.with_items:
            # ``with SessionLocal() as session:``: the flow analysis knows its sites.
            flow = self.ctx.flow(owner.node)
            for site in flow.sites:
                if flow.names.get(site.index) == name:
                    return site.kind
        return None


def thread_facts(ctx: FileContext) -> ThreadFacts:
    return per_module(ctx.module, "threads", lambda: ThreadFacts(ctx))


# -- module-level sessions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportTimeSession:
    call: cst.Call
    var: str
    where: str  # "at module level" | "at class level" | "as a default argument ..."


def import_time_sessions(ctx: FileContext) -> list[ImportTimeSession]:
    """Session instances created while a module or class body runs and kept there."""
    return per_module(ctx.module, "import-time-sessions", lambda: list(_import_time_sessions(ctx)))


def _import_time_sessions(ctx: FileContext) -> Iterator[ImportTimeSession]:
    resolver = ctx.resolver
    index = call_index(ctx.module)
    module_scope = resolver.scope(ctx.module)
    closed = _closed_at_module_level(ctx.module)
    for scoped in index.calls:
        if not isinstance(scoped.scope, cst.Module):
            lazy = _lazy_global(resolver, index, scoped.call, scoped.scope)
            if lazy is not None:
                yield ImportTimeSession(scoped.call, lazy, "in a module global")
                continue
            holder = _long_lived_holder(resolver, index, scoped.call, scoped.scope)
            if holder is not None:
                yield ImportTimeSession(scoped.call, *holder)
            continue
        call = scoped.call
        kind = resolver.call_result_kind(call, module_scope)
        if kind is None or kind.tag != "session":
            continue
        held = _held_by(index, call)
        if held is None or _in_main_guard(index, call):
            continue
        var, where = held
        if where == "at module level" and var in closed:
            continue  # a script that closes its session before the import ends
        if where == "at module level" and scoped.in_class_body:
            where = "at class level"
        yield ImportTimeSession(call, var, where)


def _lazy_global(resolver: Resolver, index: CallIndex, call: cst.Call, fn: cst.CSTNode) -> str | None:
    """``global s; s = Session()`` in a function (a lazily created shared session,
    often behind ``if s is None``): the name bound, when ``call`` makes a session."""
    if not isinstance(fn, cst.FunctionDef):
        return None
    parent = index.parent_of(call)
    if not isinstance(parent, cst.Assign) or len(parent.targets) != 1:
        return None
    target = parent.targets[0].target
    if not isinstance(target, cst.Name):
        return None
    scope = resolver.scope(fn)
    if target.value not in scope.globals:
        return None
    kind = resolver.call_result_kind(call, scope)
    if kind is None or kind.tag != "session" or kind.scoped:
        return None
    return target.value


_CACHES = frozenset({"functools.cache", "functools.lru_cache"})


def _long_lived_holder(resolver: Resolver, index: CallIndex, call: cst.Call, fn: cst.CSTNode) -> tuple[str, str] | None:
    """(name, where) when a function keeps the session it creates in a place that
    outlives the call and is shared: returned by a ``functools.cache``d function, put
    on a singleton (``metaclass=Singleton``, a ``__new__`` handing out one instance),
    put on an object that a project module creates at import time (``db = Store()``
    with ``self.session = factory()`` in ``Store.__init__``), or put into the worker
    context of a startup hook (arq's ``async def startup(ctx): ctx["db"] = Session()``)."""
    if not isinstance(fn, cst.FunctionDef):
        return None
    scope = resolver.scope(fn)
    kind = resolver.call_result_kind(call, scope)
    if kind is None or kind.tag != "session" or kind.scoped:
        return None
    for target in _flows_to(index, call, fn):
        if target is None:
            if _is_cached(resolver, fn, scope):
                return f"{fn.name.value}()", "in a cached function (every caller gets this one)"
            continue
        attr = _self_attr_name(target)
        cls = scope.cls
        if attr is not None and cls is not None and scope.params[:1] == ["self"]:
            if _is_singleton(cls):
                return attr, f"on the singleton `{cls.name.value}`"
            if fn.name.value == "__init__" and any(statement is cls for statement in resolver.module.body):
                where = resolver.index.instantiated_at_import(f"{resolver.facts.name}.{cls.name.value}")
                if where is not None:
                    return attr, f"in `{cls.name.value}.__init__` for the object that `{where}` creates at import time"
            continue
        if (
            isinstance(target, cst.Subscript)
            and isinstance(target.value, cst.Name)
            and scope.params[:1] == [target.value.value]
            and "startup" in fn.name.value.lower()
        ):
            key = _subscript_key(target)
            return key or target.value.value, f"in the worker context at startup (`{fn.name.value}`)"
    return None


def _subscript_key(target: cst.Subscript) -> str | None:
    if len(target.slice) == 1 and isinstance(target.slice[0].slice, cst.Index):
        key = target.slice[0].slice.value
        if isinstance(key, cst.SimpleString) and isinstance(key.evaluated_value, str):
            return key.evaluated_value
    return None


def _flows_to(index: CallIndex, call: cst.Call, fn: cst.FunctionDef) -> Iterator[cst.BaseExpression | None]:
    """Where the call's value is kept: assignment targets, directly or through one
    local name (``db = Session(); ctx["db"] = db``); None for a ``return``."""
    parent = index.parent_of(call)
    if isinstance(parent, cst.Return):
        yield None
        return
    if not isinstance(parent, (cst.Assign, cst.AnnAssign)) or parent.value is not call:
        return
    targets = [t.target for t in parent.targets] if isinstance(parent, cst.Assign) else [parent.target]
    locals_ = set()
    for target in targets:
        if isinstance(target, cst.Name):
            locals_.add(target.value)
        else:
            yield target
    if not locals_:
        return
    for node in walk_scope(fn):
        if isinstance(node, cst.Return) and isinstance(node.value, cst.Name) and node.value.value in locals_:
            yield None
        elif isinstance(node, cst.Assign) and isinstance(node.value, cst.Name) and node.value.value in locals_:
            for t in node.targets:
                if not isinstance(t.target, cst.Name):
                    yield t.target


def _is_cached(resolver: Resolver, fn: cst.FunctionDef, scope: Scope) -> bool:
    outer = scope.parent or scope
    for decorator in fn.decorators:
        expr = decorator.decorator.func if isinstance(decorator.decorator, cst.Call) else decorator.decorator
        if resolver.qualify(expr, outer) in _CACHES:
            return True
    return False


def _is_singleton(cls: cst.ClassDef) -> bool:
    """``class Db(metaclass=Singleton)``, ``class Db(Singleton)``, or a ``__new__``
    that keeps the instance it hands out (``cls._instance``)."""
    for arg in (*cls.bases, *cls.keywords):
        name = dotted(arg.value)
        if name is not None and "singleton" in name.rsplit(".", 1)[-1].lower():
            return True
    for statement in cls.body.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == "__new__":
            for node in walk_scope(statement):
                if isinstance(node, cst.Attribute) and "instance" in node.attr.value.lower():
                    return True
    return False


def _held_by(index: CallIndex, call: cst.Call) -> tuple[str, str] | None:
    """(name, where) when the call's value is kept by the module or a default argument."""
    parent = index.parent_of(call)
    if isinstance(parent, (cst.Assign, cst.AnnAssign)) and parent.value is call:
        targets = [t.target for t in parent.targets] if isinstance(parent, cst.Assign) else [parent.target]
        for target in targets:
            if isinstance(target, cst.Name):
                return target.value, "at module level"
            if isinstance(target, cst.Attribute):
                return target.attr.value, "at module level"
        return None
    if isinstance(parent, cst.Param) and parent.default is call:
        return parent.name.value, "as a default argument (once, at import time)"
    return None


def _in_main_guard(index: CallIndex, node: cst.CSTNode) -> bool:
    """Inside ``if __name__ == "__main__":`` (a script's body, run once)."""
    current: cst.CSTNode | None = node
    while current is not None:
        parent = index.parent_of(current)
        if isinstance(parent, cst.If) and current is parent.body and _is_main_test(parent.test):
            return True
        current = parent
    return False


def _is_main_test(test: cst.BaseExpression) -> bool:
    if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
        return False
    sides = (test.left, test.comparisons[0].comparator)
    names = {s.value for s in sides if isinstance(s, cst.Name)}
    strings = {s.evaluated_value for s in sides if isinstance(s, cst.SimpleString)}
    return names == {"__name__"} and strings == {"__main__"}


def _closed_at_module_level(module: cst.Module) -> set[str]:
    out: set[str] = set()
    for node in walk_scope(module):
        if (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and isinstance(node.func.value, cst.Name)
            and node.func.attr.value in CLOSE_METHODS
        ):
            out.add(node.func.value.value)
        elif isinstance(node, cst.WithItem) and isinstance(strip_await(node.item), cst.Name):
            out.add(strip_await(node.item).value)  # type: ignore[attr-defined]
    return out


# -- helpers -----------------------------------------------------------------------------


def _argument(call: cst.Call, position: int, keyword: str) -> cst.BaseExpression | None:
    keywords = keyword_args(call)
    if keyword in keywords:
        return keywords[keyword]
    positional = []
    for arg in call.args:
        if arg.keyword is not None or arg.star:
            break
        positional.append(arg.value)
    return positional[position] if position < len(positional) else None


def _unwrap_optional(annotation: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(annotation, cst.Subscript) and annotation.slice:
        inner = annotation.slice[0].slice
        if isinstance(inner, cst.Index):
            return inner.value
    if isinstance(annotation, cst.BinaryOperation):
        return annotation.left
    return annotation


def _self_attr_name(expr: cst.BaseExpression) -> str | None:
    """``attr`` of ``self.attr``."""
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        return expr.attr.value
    return None


def _method_class(expr: cst.BaseExpression, scope: Scope) -> cst.ClassDef | None:
    """The class of the method ``scope`` when ``expr`` is ``self.<attr>`` in it."""
    if _self_attr_name(expr) is None or scope.cls is None or not scope.params or scope.params[0] != "self":
        return None
    return scope.cls


def _is_instance_method(fn: cst.FunctionDef) -> bool:
    names = {dotted(d.decorator) for d in fn.decorators}
    return not names & {"staticmethod", "classmethod"}


def _lambdas(expr: cst.BaseExpression) -> Iterator[cst.Lambda]:
    """Lambdas shipped as values (``kwargs={"on_done": lambda: s.commit()}``)."""
    expr = strip_await(expr)
    if isinstance(expr, cst.Lambda):
        yield expr
    elif isinstance(expr, (cst.Tuple, cst.List, cst.Set)):
        for element in expr.elements:
            yield from _lambdas(element.value)
    elif isinstance(expr, cst.Dict):
        for entry in expr.elements:
            yield from _lambdas(entry.value)


def _walk_with_scopes(fn: cst.FunctionDef | cst.Lambda) -> Iterator[tuple[cst.CSTNode, tuple[cst.FunctionDef | cst.Lambda, ...]]]:
    """Nodes of ``fn``'s body with the chain of function scopes they are in."""
    stack: list[tuple[cst.CSTNode, tuple[cst.FunctionDef | cst.Lambda, ...]]] = [(fn.body, (fn,))]
    while stack:
        node, scopes = stack.pop()
        yield node, scopes
        inner = (*scopes, node) if isinstance(node, (cst.FunctionDef, cst.Lambda)) else scopes
        for child in reversed(children(node)):
            stack.append((child, inner))


def _names_in(target: cst.CSTNode) -> list[str]:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for e in target.elements for n in _names_in(e.value)]
    if isinstance(target, cst.StarredElement):
        return _names_in(target.value)
    return []


def _comp_fors(comp_for: cst.CompFor | None) -> Iterator[cst.CompFor]:
    while comp_for is not None:
        yield comp_for
        comp_for = comp_for.inner_for_in

