"""The fate of every session and connection a scope creates, path by path.

A structured abstract interpreter over one function (or the module body). Each path
carries an exact state: which local names refer to which creation *site*, and whether
each site is open, closed, closed by its ``with``, or has escaped (returned, stored,
handed to a closing construct). Sets of paths are kept apart (no lossy join), so
``if s is not None: s.close()`` guards and correlated branches are understood; the set
is capped, and a scope whose paths explode is given up on (no findings, never noise).

Two kinds of path: *normal* ones, and ones on which an exception was raised (any
statement that may raise, an explicit ``raise``, a ``yield`` the caller throws into).
A state remembers whether it took an exceptional edge, so a leak can be classified as
"not closed on some path" (SES101) or "closed, but not when something raises" (SES102).

Facts only: which sites leak on which kind of path, which are closed explicitly, which
are used after the ``with`` that closed them. Rules decide what to report.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import libcst as cst

from sessionlint.analysis.kinds import FunctionSummary
from sessionlint.analysis.scope import Resolver, Scope, ScopeNode, dotted, strip_await, target_names
from sessionlint.analysis.sqla import CLOSE_METHODS, CONNECTION_CLOSE_METHODS, ROLLBACK_METHODS
from sessionlint.analysis.walk import children, walk, walk_scope

OPEN, CLOSED, WITH_CLOSED, ESCAPED = "open", "closed", "with-closed", "escaped"
MAX_PATHS = 256

# Calls that take ownership of a value passed to them: contextlib closing constructs,
# ExitStack registration, containers.
_OWNING_FUNCS = frozenset({"contextlib.closing", "contextlib.aclosing", "closing", "aclosing"})
_OWNING_METHODS = frozenset(
    {
        "enter_context", "enter_async_context", "push", "push_async_exit", "callback",
        "push_async_callback", "append", "appendleft", "insert", "extend", "setdefault",
        "add_done_callback", "addfinalizer", "register",
    }
)
_SAME_VALUE_METHODS = frozenset({"execution_options"})  # Connection.execution_options() returns self
# Calls returning a connection someone else opened and will close.
_BORROWED_CONNECTIONS = frozenset({"alembic.op.get_bind"})


@dataclass(frozen=True, slots=True)
class Site:
    """A call that creates a session or connection."""

    index: int
    node: cst.Call
    kind: str  # "session" | "connection"
    owned: bool  # False for scoped_session registry calls
    is_async: bool
    # A session bound to a connection (alembic's ``op.get_bind()``, a parameter, one
    # the function opens, which SES103 follows): it checks out no connection of its
    # own, so not closing it leaks nothing; the connection's owner ends it.
    bound_to_connection: bool = False
    # What typed the creating call (``Kind.evidence``): "" its code, else an
    # annotation, its name or its use.
    evidence: str = ""


# Values a local name can hold, as far as we track: a site, a holder of a site (an
# object built from it), or None.
Val = tuple[str, int]
NONE: Val = ("none", -1)  # None, or False
TRUTHY: Val = ("truthy", -1)  # True


class Path:
    """One path's state. Immutable: every update returns a new Path."""

    __slots__ = ("env", "status", "exc", "_key")

    def __init__(self, env: dict[str, Val], status: dict[int, str], exc: bool) -> None:
        self.env = env
        self.status = status
        self.exc = exc
        self._key: tuple[frozenset[tuple[str, Val]], frozenset[tuple[int, str]], bool] | None = None

    def key(self) -> tuple[frozenset[tuple[str, Val]], frozenset[tuple[int, str]], bool]:
        if self._key is None:
            self._key = (frozenset(self.env.items()), frozenset(self.status.items()), self.exc)
        return self._key

    def with_env(self, name: str, value: Val | None) -> Path:
        env = dict(self.env)
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
        return Path(env, self.status, self.exc)

    def with_status(self, site: int, status: str) -> Path:
        if self.status.get(site) == status:
            return self
        new = dict(self.status)
        new[site] = status
        return Path(self.env, new, self.exc)

    def raised(self) -> Path:
        return self if self.exc else Path(self.env, self.status, True)

    def sites_of(self, name: str) -> int | None:
        value = self.env.get(name)
        if value is None or value[0] == "none":
            return None
        return value[1]

    def referenced(self, site: int, besides: str) -> bool:
        return any(v[1] == site and v[0] != "none" for n, v in self.env.items() if n != besides)


class Paths:
    """A deduplicated set of paths."""

    __slots__ = ("items",)

    def __init__(self, paths: Iterable[Path] = ()) -> None:
        self.items: dict[object, Path] = {}
        for path in paths:
            self.add(path)

    def add(self, path: Path) -> None:
        self.items.setdefault(path.key(), path)
        if len(self.items) > MAX_PATHS:
            raise _TooManyPaths

    def update(self, other: Paths) -> None:
        for key, path in other.items.items():
            if key not in self.items:
                self.add(path)

    def __iter__(self) -> Iterator[Path]:
        return iter(list(self.items.values()))

    def __bool__(self) -> bool:
        return bool(self.items)

    def same(self, other: Paths) -> bool:
        return self.items.keys() == other.items.keys()


class _TooManyPaths(Exception):
    pass


@dataclass
class Outcome:
    normal: Paths = field(default_factory=Paths)
    returns: Paths = field(default_factory=Paths)
    breaks: Paths = field(default_factory=Paths)
    continues: Paths = field(default_factory=Paths)
    raises: Paths = field(default_factory=Paths)

    def absorb_jumps(self, other: Outcome) -> None:
        self.returns.update(other.returns)
        self.breaks.update(other.breaks)
        self.continues.update(other.continues)
        self.raises.update(other.raises)


# -- operations a statement performs on the tracked values -----------------------


@dataclass(frozen=True, slots=True)
class Op:
    """``create``/``bind``/``alias``/``holder``/``none``/``forget``/``close``/``escape``/
    ``use``/``yield``/``exit`` (with-exit)/``drop`` (del)."""

    what: str
    name: str = ""
    site: int = -1
    other: str = ""
    node: cst.CSTNode | None = None
    branches: tuple[tuple[Op, ...], ...] = ()


@dataclass
class FlowFacts:
    """What the interpreter learned about one scope."""

    scope: ScopeNode
    sites: list[Site] = field(default_factory=list)
    leaks_normal: set[int] = field(default_factory=set)
    leaks_exceptional: set[int] = field(default_factory=set)
    explicitly_closed: set[int] = field(default_factory=set)
    yielded: set[int] = field(default_factory=set)
    uses_after_with: dict[int, tuple[cst.CSTNode, int]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # site -> first name bound to it
    gave_up: bool = False

    def name_of(self, site: Site) -> str:
        return self.names.get(site.index, "<unnamed>")

    def sites_leaking(self) -> Iterator[tuple[Site, bool]]:
        """(site, on a normal path?) for every owned site that leaks on some path."""
        for site in self.sites:
            if not site.owned or site.bound_to_connection:
                continue
            if site.index in self.yielded and site.index not in self.explicitly_closed:
                continue  # a generator handing its session to the consumer
            if site.index in self.leaks_normal:
                yield site, True
            elif site.index in self.leaks_exceptional and site.index in self.explicitly_closed:
                # Only a value the scope means to close can be said to leak when an
                # exception skips the close; one it hands over is the caller's.
                yield site, False


class FlowAnalyzer:
    """Interprets one scope; see the module docstring."""

    def __init__(self, resolver: Resolver, scope_node: ScopeNode) -> None:
        self.resolver = resolver
        self.scope: Scope = resolver.scope(scope_node)
        self.facts = FlowFacts(scope_node)
        self._site_by_node: dict[int, Site] = {}
        self._ops: dict[int, tuple[list[Op], bool]] = {}
        self._class_methods: dict[str, object] | None = None
        # Inside a ``finally`` block: its cleanup calls are taken not to raise, so a
        # ``close()`` there counts even after ``untrack(session)`` (SES102 asks for
        # the close in a ``finally``, not for a ``finally`` that cannot fail).
        self._in_finally = 0

    # -- entry ----------------------------------------------------------------

    def run(self) -> FlowFacts:
        node = self.scope.node
        try:
            if isinstance(node, cst.Module):
                self._exec_block(node.body, Paths([Path({}, {}, False)]))
            elif isinstance(node, cst.FunctionDef):
                outcome = self._exec_suite(node.body, Paths([Path({}, {}, False)]))
                for path in (*outcome.normal, *outcome.returns):
                    self._check_exit(path)
                for path in outcome.raises:
                    self._check_exit(path.raised())
        except (_TooManyPaths, RecursionError):
            self.facts.gave_up = True
            self.facts.leaks_normal.clear()
            self.facts.leaks_exceptional.clear()
            self.facts.uses_after_with.clear()
        return self.facts

    def _check_exit(self, path: Path) -> None:
        for site, status in path.status.items():
            if status == OPEN:
                self._leak(site, path)

    def _leak(self, site: int, path: Path) -> None:
        if self.scope.is_module:
            return  # module-level values live as long as the process: SES402's business
        (self.facts.leaks_exceptional if path.exc else self.facts.leaks_normal).add(site)

    # -- statements -----------------------------------------------------------

    def _exec_suite(self, suite: cst.BaseSuite, paths: Paths) -> Outcome:
        if isinstance(suite, cst.IndentedBlock):
            return self._exec_block(suite.body, paths)
        assert isinstance(suite, cst.SimpleStatementSuite)
        return self._exec_simple(suite.body, paths)

    def _exec_block(self, statements: Iterable[cst.BaseStatement | cst.BaseSmallStatement], paths: Paths) -> Outcome:
        outcome = Outcome()
        current = paths
        for statement in statements:
            if not current:
                break
            if isinstance(statement, cst.SimpleStatementLine):
                step = self._exec_simple(statement.body, current)
            else:
                step = self._exec_compound(statement, current)  # type: ignore[arg-type]
            outcome.absorb_jumps(step)
            current = step.normal
        outcome.normal = current
        return outcome

    def _exec_simple(self, smalls: Iterable[cst.BaseSmallStatement], paths: Paths) -> Outcome:
        outcome = Outcome()
        current = paths
        for small in smalls:
            if not current:
                break
            ops, may_raise = self._compile_small(small)
            if may_raise and not self._in_finally:
                for path in current:
                    outcome.raises.add(path.raised())
            after = self._applied(current, ops)
            if isinstance(small, cst.Return):
                outcome.returns.update(after)
                current = Paths()
            elif isinstance(small, cst.Raise):
                for path in after:
                    outcome.raises.add(path.raised())
                current = Paths()
            elif isinstance(small, cst.Break):
                outcome.breaks.update(after)
                current = Paths()
            elif isinstance(small, cst.Continue):
                outcome.continues.update(after)
                current = Paths()
            else:
                current = after
        outcome.normal = current
        return outcome

    def _exec_compound(self, node: cst.BaseCompoundStatement, paths: Paths) -> Outcome:
        if isinstance(node, cst.If):
            return self._exec_if(node, paths)
        if isinstance(node, (cst.For, cst.While)):
            return self._exec_loop(node, paths)
        if isinstance(node, (cst.Try, cst.TryStar)):
            return self._exec_try(node, paths)
        if isinstance(node, cst.With):
            return self._exec_with(node, paths)
        if isinstance(node, cst.Match):
            return self._exec_match(node, paths)
        if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
            ops, may_raise = self._compile_definition(node)
            outcome = Outcome()
            if may_raise:
                for path in paths:
                    outcome.raises.add(path.raised())
            outcome.normal = self._applied(paths, ops)
            return outcome
        return Outcome(normal=paths)

    def _run_expr(self, expr: cst.CSTNode | None, paths: Paths, outcome: Outcome) -> Paths:
        """Evaluate an expression for its effects; it may raise if it calls anything."""
        if expr is None:
            return paths
        ops, may_raise = self._compile_expr_cached(expr)
        if may_raise and not self._in_finally:
            for path in paths:
                outcome.raises.add(path.raised())
        if not ops:
            return paths
        return self._applied(paths, ops)

    def _exec_if(self, node: cst.If, paths: Paths) -> Outcome:
        outcome = Outcome()
        paths = self._run_expr(node.test, paths, outcome)
        yes, no = self._refine(node.test, paths)
        body = self._exec_suite(node.body, yes)
        outcome.absorb_jumps(body)
        outcome.normal.update(body.normal)
        if isinstance(node.orelse, cst.If):
            other = self._exec_if(node.orelse, no)
        elif isinstance(node.orelse, cst.Else):
            other = self._exec_suite(node.orelse.body, no)
        else:
            other = Outcome(normal=no)
        outcome.absorb_jumps(other)
        outcome.normal.update(other.normal)
        return outcome

    def _exec_loop(self, node: cst.For | cst.While, paths: Paths) -> Outcome:
        outcome = Outcome()
        infinite = False
        if isinstance(node, cst.For):
            paths = self._run_expr(node.iter, paths, outcome)
            binds = [Op("forget", name) for name in target_names(node.target)]
        else:
            binds = []
            test = node.test
            infinite = isinstance(test, cst.Name) and test.value == "True" or (
                isinstance(test, cst.Integer) and test.value != "0"
            )
        head = Paths(paths)
        exits = Paths()
        breaks = Paths()
        for _ in range(50):
            entering = head
            if isinstance(node, cst.While):
                entering = self._run_expr(node.test, head, outcome)
                yes, no = self._refine(node.test, entering)
                if not infinite:
                    exits.update(no)
                entering = yes
            else:
                exits.update(head)
                for path in head:
                    outcome.raises.add(path.raised())  # next() may raise
                entering = self._applied(head, binds)
            body = self._exec_suite(node.body, entering)
            outcome.returns.update(body.returns)
            outcome.raises.update(body.raises)
            breaks.update(body.breaks)
            new_head = Paths(head)
            new_head.update(body.normal)
            new_head.update(body.continues)
            if new_head.same(head):
                break
            head = new_head
        else:
            raise _TooManyPaths
        if node.orelse is not None:
            orelse = self._exec_suite(node.orelse.body, exits)
            outcome.absorb_jumps(orelse)
            exits = orelse.normal
        outcome.normal = exits
        outcome.normal.update(breaks)
        return outcome

    def _exec_try(self, node: cst.Try | cst.TryStar, paths: Paths) -> Outcome:
        result = Outcome()
        body = self._exec_suite(node.body, paths)
        handled = Outcome()  # everything before finally runs
        handled.returns.update(body.returns)
        handled.breaks.update(body.breaks)
        handled.continues.update(body.continues)
        catch_all = False
        for handler in node.handlers:
            entry = Paths(body.raises)
            if handler.name is not None:
                names = target_names(handler.name.name)
                entry = self._applied(entry, [Op("forget", n) for n in names])
            out = self._exec_suite(handler.body, entry)
            handled.absorb_jumps(out)
            handled.normal.update(out.normal)
            if handler.type is None or _catches_everything(handler.type):
                catch_all = True
        if not node.handlers or not catch_all:
            handled.raises.update(body.raises)
        if node.orelse is not None:
            orelse = self._exec_suite(node.orelse.body, body.normal)
            handled.absorb_jumps(orelse)
            handled.normal.update(orelse.normal)
        else:
            handled.normal.update(body.normal)
        if node.finalbody is None:
            return handled
        # The finally block runs on every way out of the try; run it once per way.
        final = node.finalbody.body
        for source, sink in (
            (handled.normal, "normal"),
            (handled.returns, "returns"),
            (handled.breaks, "breaks"),
            (handled.continues, "continues"),
            (handled.raises, "raises"),
        ):
            if not source:
                continue
            self._in_finally += 1
            try:
                out = self._exec_suite(final, source)
            finally:
                self._in_finally -= 1
            result.absorb_jumps(out)
            getattr(result, sink).update(out.normal)
        return result

    def _exec_with(self, node: cst.With, paths: Paths) -> Outcome:
        outcome = Outcome()
        if any(_may_raise(item.item) for item in node.items):
            for path in paths:
                outcome.raises.add(path.raised())  # entering may raise
        managed_sites: list[int] = []
        managed_names: list[str] = []
        enter_ops: list[Op] = []
        for item in node.items:
            enter_ops.extend(self._compile_with_item(item, managed_sites, managed_names))
        current = self._applied(paths, enter_ops)
        body = self._exec_suite(node.body, current)
        exit_ops = [Op("exit", site=s) for s in managed_sites] + [Op("exit", name=n) for n in managed_names]
        for source, sink in (
            (body.normal, outcome.normal),
            (body.returns, outcome.returns),
            (body.breaks, outcome.breaks),
            (body.continues, outcome.continues),
            (body.raises, outcome.raises),
        ):
            sink.update(self._applied(source, exit_ops))
        return outcome

    def _exec_match(self, node: cst.Match, paths: Paths) -> Outcome:
        outcome = Outcome()
        paths = self._run_expr(node.subject, paths, outcome)
        outcome.normal.update(paths)  # no case may match
        for case in node.cases:
            out = self._exec_suite(case.body, paths)
            outcome.absorb_jumps(out)
            outcome.normal.update(out.normal)
        return outcome

    # -- refinement -------------------------------------------------------------

    def _refine(self, test: cst.BaseExpression, paths: Paths) -> tuple[Paths, Paths]:
        """Split paths by a test on a tracked name being None (``if s:``, ``s is None``)."""
        when_true, when_false = _none_tests(test)
        if not when_true and not when_false:
            return paths, paths
        return (
            Paths(p for p in paths if _consistent(p, when_true)),
            Paths(p for p in paths if _consistent(p, when_false)),
        )

    # -- applying ops -------------------------------------------------------------

    def _apply(self, path: Path, ops: list[Op]) -> list[Path]:
        """Run ops on one path; a ``fork`` op splits it (``a if c else b``)."""
        paths = [path]
        for op in ops:
            if op.what == "fork":
                paths = [q for p in paths for branch in op.branches for q in self._apply(p, list(branch))]
            else:
                paths = [self._apply_one(p, op) for p in paths]
        return paths

    def _applied(self, paths: Iterable[Path], ops: list[Op]) -> Paths:
        if not ops:
            return Paths(paths)
        return Paths(q for p in paths for q in self._apply(p, ops))

    def _rebind(self, path: Path, name: str, value: Val | None) -> Path:
        old = path.sites_of(name)
        if old is not None and path.status.get(old) == OPEN and not path.referenced(old, name):
            self._leak(old, path)  # the last reference to an open session is overwritten
        return path.with_env(name, value)

    def _apply_one(self, path: Path, op: Op) -> Path:
        what = op.what
        if what == "create":
            if op.name:
                self.facts.names.setdefault(op.site, op.name)
                # Check what the name held before the new session replaces it.
                path = self._rebind(path, op.name, ("site", op.site))
            return path.with_status(op.site, OPEN)
        if what == "alias":
            source = path.env.get(op.other)
            return self._rebind(path, op.name, source)
        if what == "holder":
            site = path.sites_of(op.other)
            if site is None:
                return path
            return self._rebind(path, op.name, ("holder", site))
        if what == "none":
            return self._rebind(path, op.name, NONE)
        if what == "truthy":
            return self._rebind(path, op.name, TRUTHY)
        if what == "forget":
            return self._rebind(path, op.name, None) if op.name in path.env else path
        if what == "escape-site":
            return path.with_status(op.site, ESCAPED)
        site = path.sites_of(op.name) if op.name else op.site
        if site is None or site < 0:
            return path
        if what == "close":
            self.facts.explicitly_closed.add(site)
            return path.with_status(site, CLOSED)
        if what == "escape":
            return path.with_status(site, ESCAPED)
        if what == "exit":
            return path.with_status(site, WITH_CLOSED)
        if what == "use":
            direct = path.env.get(op.name, ("", -1))[0] == "site"
            if direct and path.status.get(site) == WITH_CLOSED and op.node is not None:
                self.facts.uses_after_with.setdefault(id(op.node), (op.node, site))
            return path
        if what == "yield":
            self.facts.yielded.add(site)
            return path
        return path

    # -- compiling statements to ops -------------------------------------------------

    def _compile_small(self, node: cst.BaseSmallStatement) -> tuple[list[Op], bool]:
        cached = self._ops.get(id(node))
        if cached is not None:
            return cached
        ops: list[Op] = []
        may_raise = _may_raise(node)
        if isinstance(node, cst.Assign) and may_raise and not _may_raise(node.value):
            may_raise = any(_store_may_raise(t.target) for t in node.targets)
        if isinstance(node, cst.Assign):
            ops = self._compile_assign([t.target for t in node.targets], node.value)
        elif isinstance(node, cst.AnnAssign):
            ops = self._compile_assign([node.target], node.value) if node.value is not None else []
        elif isinstance(node, cst.AugAssign):
            ops = self._expr_ops(node.value) + [Op("forget", n) for n in target_names(node.target)]
        elif isinstance(node, cst.Return):
            ops = self._compile_escape(node.value) if node.value is not None else []
        elif isinstance(node, cst.Expr):
            ops = self._compile_statement_expr(node.value)
        elif isinstance(node, cst.Del):
            ops = [Op("forget", n) for n in target_names(node.target)]
            if isinstance(node.target, (cst.Attribute, cst.Subscript)):
                ops = self._expr_ops(node.target)
        elif isinstance(node, (cst.Raise, cst.Assert)):
            for child in children(node):
                ops.extend(self._expr_ops(child))
        elif isinstance(node, (cst.Import, cst.ImportFrom)):
            names = node.names if not isinstance(node.names, cst.ImportStar) else []
            for alias in names:
                if alias.asname is not None:
                    ops.extend(Op("forget", n) for n in target_names(alias.asname.name))
                else:
                    ops.append(Op("forget", (dotted(alias.name) or "").split(".")[0]))
        result = (ops, may_raise)
        self._ops[id(node)] = result
        return result

    def _compile_expr_cached(self, expr: cst.CSTNode) -> tuple[list[Op], bool]:
        cached = self._ops.get(id(expr))
        if cached is None:
            cached = (self._expr_ops(expr), _may_raise(expr))
            self._ops[id(expr)] = cached
        return cached

    def _compile_definition(self, node: cst.FunctionDef | cst.ClassDef) -> tuple[list[Op], bool]:
        cached = self._ops.get(id(node))
        if cached is not None:
            return cached
        ops: list[Op] = []
        for decorator in node.decorators:
            ops.extend(self._expr_ops(decorator.decorator))
        if isinstance(node, cst.FunctionDef):
            # A nested function closing over a session carries it wherever it goes.
            ops.extend(Op("escape", name) for name in _free_names(node))
        ops.append(Op("forget", node.name.value))
        result = (ops, bool(node.decorators))
        self._ops[id(node)] = result
        return result

    def _site_for(self, call: cst.BaseExpression) -> Site | None:
        """The creation site of a call, if it creates a session or a connection."""
        call = strip_await(call)
        if not isinstance(call, cst.Call):
            return None
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in _SAME_VALUE_METHODS:
            return self._site_for(func.value)
        found = self._site_by_node.get(id(call))
        if found is not None:
            return found
        kind = self.resolver.call_result_kind(call, self.scope)
        if kind is None or kind.tag not in ("session", "connection"):
            return None
        bound = kind.tag == "session" and (self._bound_to_connection(call) or self._unbound(call))
        site = Site(len(self.facts.sites), call, kind.tag, not kind.scoped, kind.is_async, bound, kind.evidence)
        self.facts.sites.append(site)
        self._site_by_node[id(call)] = site
        return site

    def _unbound(self, call: cst.Call) -> bool:
        """``Session()`` of the class itself, with no bind: it can never check out a
        connection (nova's ``orm.Session().merge(obj, load=False)`` to copy objects)."""
        if call.args:
            return False
        callee = self.resolver.kind(call.func, self.scope)
        return callee is not None and callee.tag == "session_class"

    def _bound_to_connection(self, call: cst.Call) -> bool:
        """``Session(bind=conn)``/``Session(conn)``/``factory(bind=conn)`` where ``conn``
        is a connection, not an engine."""
        bind = None
        for i, arg in enumerate(call.args):
            if arg.keyword is not None and arg.keyword.value == "bind":
                bind = arg.value
            elif i == 0 and arg.keyword is None and not arg.star:
                callee = self.resolver.kind(call.func, self.scope)
                if callee is not None and callee.tag == "session_class":
                    bind = arg.value  # Session(bind, ...); a factory takes keywords only
        return bind is not None and self._is_connection(bind, 0)

    def _is_connection(self, expr: cst.BaseExpression, depth: int) -> bool:
        expr = strip_await(expr)
        if isinstance(expr, cst.Call):
            if self.resolver.qualify(expr.func, self.scope) in _BORROWED_CONNECTIONS:
                return True
            if isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "connection" and not expr.args:
                return True  # ``other_session.connection()``: that session's connection
            kind = self.resolver.call_result_kind(expr, self.scope)
            return kind is not None and kind.tag == "connection"
        if not isinstance(expr, cst.Name) or depth > 3:
            return False
        owner = self.resolver.owner(expr.value, self.scope)
        if owner is None or owner.node is not self.scope.node:
            return False
        if expr.value in owner.params:
            kind = self.resolver.local_kind(owner, expr.value)
            return kind is not None and kind.tag == "connection"
        if any(self._is_connection(value, depth + 1) for value in owner.assigned.get(expr.value, ())):
            return True
        # ``with engine.connect() as conn:``: the block closes it.
        for item in owner.with_items.get(expr.value, ()):
            kind = self.resolver.kind(item, owner)
            if kind is not None and kind.tag == "connection":
                return True
        return False

    def _lent_site(self, call: cst.Call, asname: str) -> Site | None:
        """``with db.session_context() as session:``: a session lent for the block, by
        its names (:meth:`Resolver.lent_session`). Not owned here: only the block's
        end, and uses after it, matter."""
        found = self._site_by_node.get(id(call))
        if found is None:
            kind = self.resolver.lent_session(call, asname, self.scope)
            if kind is None:
                return None
            found = Site(len(self.facts.sites), call, "session", False, kind.is_async)
            self.facts.sites.append(found)
            self._site_by_node[id(call)] = found
        return found

    def _factory_begin_site(self, expr: cst.BaseExpression) -> Site | None:
        """``with Factory.begin() as s:`` creates a session closed at the end of the block."""
        expr = strip_await(expr)
        if not (isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute)):
            return None
        if expr.func.attr.value != "begin":
            return None
        base = self.resolver.kind(expr.func.value, self.scope)
        if base is None or base.tag not in ("factory", "session_class"):
            return None
        found = self._site_by_node.get(id(expr))
        if found is None:
            found = Site(len(self.facts.sites), expr, "session", True, base.is_async)
            self.facts.sites.append(found)
            self._site_by_node[id(expr)] = found
        return found

    def _compile_assign(self, targets: list[cst.BaseExpression], value: cst.BaseExpression) -> list[Op]:
        inner = strip_await(value)
        if isinstance(inner, cst.IfExp):
            # ``s = Factory() if enabled else None``: one path per branch.
            return self._expr_ops(inner.test) + [
                Op(
                    "fork",
                    branches=(
                        tuple(self._compile_assign(targets, inner.body)),
                        tuple(self._compile_assign(targets, inner.orelse)),
                    ),
                )
            ]
        site = self._site_for(inner)
        ops: list[Op] = []
        local_names = [t.value for t in targets if isinstance(t, cst.Name) and self._is_local(t.value)]
        stores = [t for t in targets if not (isinstance(t, cst.Name) and self._is_local(t.value))]
        if site is not None:
            ops.extend(self._call_arg_ops(_creation_call(inner)))
            for name in local_names:
                ops.append(Op("create", name, site.index))
            if not local_names:
                ops.append(Op("create", "", site.index))
            if stores:
                ops.append(Op("escape-site", site=site.index))
            ops.extend(self._store_target_ops(stores))
            return ops
        ops.extend(self._expr_ops(value))
        ops.extend(self._store_target_ops(stores))
        carried = _carried_names(value, self.resolver, self.scope)
        if stores:
            ops.extend(Op("escape", n) for n in carried)
        refined = _first_argument_name(inner)
        for name in local_names:
            if name == refined:
                continue  # ``session = seed_data(session)``: the same session, prepared
            if _is_none(inner) or (isinstance(inner, cst.Name) and inner.value == "False"):
                ops.append(Op("none", name))  # before the alias case: None is a Name too
            elif isinstance(inner, cst.Name) and inner.value == "True":
                # An ownership flag (``owned = True`` where the session is made, then
                # ``finally: if owned: s.close()``): ``if owned:`` follows it.
                ops.append(Op("truthy", name))
            elif isinstance(inner, cst.Name):
                ops.append(Op("alias", name, other=inner.value))
            elif carried:
                ops.append(Op("forget", name))
                ops.extend(Op("holder", name, other=n) for n in carried[:1])
            else:
                ops.append(Op("forget", name))
        return ops

    def _store_target_ops(self, stores: list[cst.BaseExpression]) -> list[Op]:
        ops: list[Op] = []
        for target in stores:
            if isinstance(target, (cst.Attribute, cst.Subscript)):
                ops.extend(self._expr_ops(target.value))
            elif isinstance(target, (cst.Tuple, cst.List)):
                ops.extend(Op("forget", n) for n in target_names(target))
        return ops

    def _is_local(self, name: str) -> bool:
        return not self.scope.is_module and self.scope.binds(name)

    def _compile_escape(self, value: cst.BaseExpression) -> list[Op]:
        """``return value``: whatever the value carries leaves the function."""
        inner = strip_await(value)
        handed = self._handed_out(inner)
        if handed is not None:
            return handed
        ops = self._expr_ops(value)
        ops.extend(Op("escape", n) for n in _carried_names(value, self.resolver, self.scope))
        return ops

    def _handed_out(self, inner: cst.BaseExpression) -> list[Op] | None:
        """``return Factory()`` / ``yield Factory()``: created and handed out at once."""
        site = self._site_for(inner)
        if site is None:
            return None
        return self._call_arg_ops(_creation_call(inner)) + [
            Op("create", "", site.index),
            Op("escape-site", site=site.index),
        ]

    def _compile_statement_expr(self, value: cst.BaseExpression) -> list[Op]:
        inner = strip_await(value)
        if isinstance(inner, cst.Yield):
            return self._compile_yield(inner)
        site = self._site_for(inner)
        if site is not None:
            # A session created and dropped on the floor.
            return self._call_arg_ops(_creation_call(inner)) + [Op("create", "", site.index)]
        return self._expr_ops(value)

    def _compile_yield(self, node: cst.Yield) -> list[Op]:
        value = node.value
        if value is None or isinstance(value, cst.From):
            return self._expr_ops(value.item) if isinstance(value, cst.From) else []
        inner = strip_await(value)
        handed = self._handed_out(inner)
        if handed is not None:
            return handed
        ops = self._expr_ops(value)
        if isinstance(inner, cst.Name):
            ops.append(Op("yield", inner.value))
        else:
            ops.extend(Op("escape", n) for n in _carried_names(value, self.resolver, self.scope))
        return ops

    def _compile_with_item(self, item: cst.WithItem, sites: list[int], names: list[str]) -> list[Op]:
        expr = strip_await(item.item)
        asnames = target_names(item.asname.name) if item.asname is not None else []
        ops: list[Op] = []
        inner = expr
        if isinstance(expr, cst.Call) and self._is_owning_call(expr) and expr.args:
            inner = strip_await(expr.args[0].value)  # closing(x), aclosing(x)
        site = self._site_for(inner) or self._factory_begin_site(inner)
        if site is None and len(asnames) == 1 and isinstance(inner, cst.Call):
            site = self._lent_site(inner, asnames[0])
        if site is not None:
            ops.extend(self._call_arg_ops(_creation_call(inner)))
            sites.append(site.index)
            ops.append(Op("create", asnames[0] if len(asnames) == 1 else "", site.index))
            return ops
        if isinstance(inner, cst.Name):
            names.append(inner.value)
            ops.extend(Op("alias", n, other=inner.value) for n in asnames)
            return ops
        ops.extend(self._expr_ops(item.item))
        ops.extend(Op("forget", n) for n in asnames)
        return ops

    def _is_owning_call(self, call: cst.Call) -> bool:
        func = call.func
        if isinstance(func, cst.Attribute):
            return func.attr.value in _OWNING_METHODS
        qname = self.resolver.qualify(func, self.scope)
        return qname in _OWNING_FUNCS

    def _call_arg_ops(self, call: cst.Call | None) -> list[Op]:
        if call is None:
            return []
        ops: list[Op] = []
        for arg in call.args:
            ops.extend(self._expr_ops(arg.value))
        return ops

    # -- expressions -------------------------------------------------------------------

    def _expr_ops(self, expr: cst.CSTNode | None) -> list[Op]:
        """Effects of evaluating ``expr``: closes, uses, escapes, in evaluation order."""
        ops: list[Op] = []
        if expr is not None:
            self._expr_into(expr, ops)
        return ops

    def _expr_into(self, expr: cst.CSTNode, ops: list[Op]) -> None:
        if isinstance(expr, cst.Call):
            self._call_into(expr, ops)
            return
        if isinstance(expr, cst.Attribute):
            if isinstance(expr.value, cst.Name):
                if expr.attr.value in CLOSE_METHODS:
                    ops.append(Op("escape", expr.value.value))  # s.close passed as a callback
                else:
                    ops.append(Op("use", expr.value.value, node=expr))
                return
            self._expr_into(expr.value, ops)
            return
        if isinstance(expr, cst.Lambda):
            ops.extend(Op("escape", n) for n in _free_names(expr))
            return
        if isinstance(expr, cst.NamedExpr):
            ops.extend(self._compile_assign([expr.target], expr.value))
            return
        if isinstance(expr, cst.Yield):
            ops.extend(self._compile_yield(expr))
            return
        for child in children(expr):
            self._expr_into(child, ops)

    def _call_into(self, call: cst.Call, ops: list[Op]) -> None:
        func = call.func
        if (
            isinstance(func, cst.Attribute)
            and func.attr.value in CLOSE_METHODS
            and self._site_for(strip_await(func.value)) is not None
        ):
            # ``engine.connect().close()``: created and closed in one expression.
            self._expr_into_args_only(func.value, ops)
            for arg in call.args:
                self._expr_into(arg.value, ops)
            return
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name):
            base = func.value.value
            method = func.attr.value
            if method in CLOSE_METHODS:
                for arg in call.args:
                    self._expr_into(arg.value, ops)
                ops.append(Op("close", base))
                return
            ops.append(Op("use", base, node=func))
            if method in _OWNING_METHODS:
                for arg in call.args:
                    self._arg_into(arg.value, ops)
                    ops.extend(Op("escape", n) for n in _carried_names(arg.value, self.resolver, self.scope))
                return
            if base == "self":
                self._helper_closes(call, self._method_summary(method), ops)
        elif self._site_for(call) is None:
            self._expr_into(func, ops)
        for arg in call.args:
            self._arg_into(arg.value, ops)
        if self._is_owning_call(call):
            for arg in call.args:
                ops.extend(Op("escape", n) for n in _carried_names(arg.value, self.resolver, self.scope))
            return
        if isinstance(func, (cst.Name, cst.Attribute)) and not (
            isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self"
        ):
            kind = self.resolver.kind(func, self.scope)
            if kind is not None and kind.tag == "function" and kind.function is not None:
                self._helper_closes(call, kind.function, ops)
        site = self._site_for(call)
        if site is not None:
            ops.append(Op("create", "", site.index))  # e.g. Session().query(...): dropped

    def _arg_into(self, value: cst.BaseExpression, ops: list[Op]) -> None:
        if isinstance(value, cst.Name):
            ops.append(Op("use", value.value, node=value))  # the callee works with it
            return
        if self._site_for(strip_await(value)) is not None:
            # An unnamed session handed straight to a call: the callee owns it.
            self._expr_into_args_only(value, ops)
        else:
            self._expr_into(value, ops)

    def _expr_into_args_only(self, call: cst.BaseExpression, ops: list[Op]) -> None:
        inner = _creation_call(strip_await(call))
        if inner is not None:
            for arg in inner.args:
                self._expr_into(arg.value, ops)

    def _method_summary(self, method: str) -> FunctionSummary | None:
        cls = self.resolver.enclosing_class(self.scope.node) if not self.scope.is_module else None
        if cls is None:
            return None
        methods = self.resolver.facts.methods.get(cls.name.value, {})
        return methods.get(method)

    def _helper_closes(self, call: cst.Call, summary: FunctionSummary | None, ops: list[Op]) -> None:
        """``cleanup(s)`` where the helper calls ``close()`` on that parameter."""
        if summary is None or not summary.closes:
            return
        params = list(summary.params)
        if params and params[0] in ("self", "cls") and isinstance(call.func, cst.Attribute):
            params = params[1:]
        for position, arg in enumerate(call.args):
            if not isinstance(arg.value, cst.Name) or arg.star:
                continue
            if arg.keyword is not None:
                param = arg.keyword.value
            elif position < len(params):
                param = params[position]
            else:
                continue
            if param in summary.closes:
                ops.append(Op("close", arg.value.value))


# -- helpers ---------------------------------------------------------------------------


def _creation_call(expr: cst.BaseExpression) -> cst.Call | None:
    expr = strip_await(expr)
    while (
        isinstance(expr, cst.Call)
        and isinstance(expr.func, cst.Attribute)
        and expr.func.attr.value in _SAME_VALUE_METHODS
    ):
        expr = strip_await(expr.func.value)
    return expr if isinstance(expr, cst.Call) else None


def _first_argument_name(expr: cst.BaseExpression) -> str | None:
    """``f(x, ...)`` -> ``"x"``, for a call whose first argument is a plain name."""
    if isinstance(expr, cst.Call) and expr.args and expr.args[0].star == "" and isinstance(expr.args[0].value, cst.Name):
        return expr.args[0].value.value
    return None


def _is_none(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "None"


def _is_constructor(func: cst.BaseExpression) -> bool:
    """``Repo(...)``, ``models.Repo(...)``, ``partial(...)``: calls that keep their args."""
    name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""
    return bool(name) and (name[0].isupper() or name == "partial")


def _carried_names(expr: cst.BaseExpression | None, resolver: Resolver, scope: Scope) -> list[str]:
    """Local names whose value ends up inside the value of ``expr``."""
    out: list[str] = []
    if expr is None:
        return out
    expr = strip_await(expr)
    if isinstance(expr, cst.Name):
        out.append(expr.value)
    elif isinstance(expr, (cst.Tuple, cst.List, cst.Set)):
        for element in expr.elements:
            out.extend(_carried_names(element.value, resolver, scope))
    elif isinstance(expr, cst.Dict):
        for entry in expr.elements:  # DictElement or StarredDictElement: both have .value
            out.extend(_carried_names(entry.value, resolver, scope))
    elif isinstance(expr, cst.Call) and _is_constructor(expr.func):
        for arg in expr.args:
            out.extend(_carried_names(arg.value, resolver, scope))
    elif isinstance(expr, cst.IfExp):
        out.extend(_carried_names(expr.body, resolver, scope))
        out.extend(_carried_names(expr.orelse, resolver, scope))
    elif isinstance(expr, cst.Lambda):
        out.extend(_free_names(expr))
    elif isinstance(expr, cst.StarredElement):
        out.extend(_carried_names(expr.value, resolver, scope))
    return out


def _free_names(node: cst.FunctionDef | cst.Lambda) -> list[str]:
    """Names a nested function or lambda reads (a superset of its free variables)."""
    names: list[str] = []
    body: cst.CSTNode = node.body
    for sub in walk(body):
        if isinstance(sub, cst.Name):
            names.append(sub.value)
    return names


def _may_raise(node: cst.CSTNode) -> bool:
    """Whether evaluating ``node`` may raise, ignoring close()/rollback() themselves.
    A lambda's body does not run where the lambda is written, so it is not looked at."""
    for sub in itertools.chain((node,), walk_scope(node)):
        if isinstance(sub, cst.Call):
            func = sub.func
            if isinstance(func, cst.Attribute) and func.attr.value in (
                CLOSE_METHODS | CONNECTION_CLOSE_METHODS | ROLLBACK_METHODS | {"remove"}
            ):
                continue
            if isinstance(func, cst.Attribute) and isinstance(func.value, (cst.SimpleString, cst.ConcatenatedString)):
                continue  # ``"|".join(SCOPES)``: building a string is taken not to raise
            return True
        if isinstance(sub, (cst.Await, cst.Subscript, cst.Yield, cst.Raise, cst.Assert)):
            if isinstance(sub, cst.Await) and isinstance(sub.expression, cst.Call):
                continue  # judged by the call it awaits
            return True
    return False


def _store_may_raise(target: cst.BaseExpression) -> bool:
    """Whether storing into ``target`` may raise: ``kwargs["db"] = s`` (a literal key
    into a local mapping) is taken not to."""
    if (
        isinstance(target, cst.Subscript)
        and isinstance(target.value, cst.Name)
        and len(target.slice) == 1
        and isinstance(target.slice[0].slice, cst.Index)
        and isinstance(target.slice[0].slice.value, (cst.SimpleString, cst.Integer))
    ):
        return False
    return _may_raise(target)


def _catches_everything(handler_type: cst.BaseExpression) -> bool:
    names = [handler_type] if not isinstance(handler_type, cst.Tuple) else [e.value for e in handler_type.elements]
    return any(isinstance(n, (cst.Name, cst.Attribute)) and dotted(n) in ("Exception", "BaseException", "builtins.Exception") for n in names)


NoneTest = list[tuple[str, bool]]  # (name, must be None on this branch)


def _none_tests(test: cst.BaseExpression) -> tuple[NoneTest, NoneTest]:
    """What a test says about names being None on its true and false branches."""
    if isinstance(test, cst.Name):
        return [(test.value, False)], [(test.value, True)]
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        yes, no = _none_tests(test.expression)
        return no, yes
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and isinstance(test.left, cst.Name):
        comparison = test.comparisons[0]
        if _is_none(comparison.comparator):
            name = test.left.value
            if isinstance(comparison.operator, (cst.Is, cst.Equal)):
                return [(name, True)], [(name, False)]
            if isinstance(comparison.operator, (cst.IsNot, cst.NotEqual)):
                return [(name, False)], [(name, True)]
    if isinstance(test, cst.BooleanOperation):
        left_yes, left_no = _none_tests(test.left)
        right_yes, right_no = _none_tests(test.right)
        if isinstance(test.operator, cst.And):
            return left_yes + right_yes, []
        return [], left_no + right_no
    return [], []


def _consistent(path: Path, tests: NoneTest) -> bool:
    for name, must_be_none in tests:
        value = path.env.get(name)
        if value is None:
            continue
        if must_be_none and value[0] != "none":
            return False
        if not must_be_none and value[0] == "none":
            return False
    return True
