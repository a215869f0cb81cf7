"""Everything rules may ask about one file, computed lazily and at most once."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from sessionlint.analysis.flow import FlowAnalyzer, FlowFacts
from sessionlint.analysis.project import ProjectIndex
from sessionlint.analysis.scope import Resolver, Scope, ScopeNode, strip_await
from sessionlint.analysis.walk import scope_nodes_of, walk


class FileContext:
    def __init__(self, path: str, module: cst.Module, index: ProjectIndex) -> None:
        self.path = path
        self.module = module
        self.index = index
        self.facts = index.facts_for_path(path)
        self.resolver = Resolver(module, self.facts, index)
        self._flows: dict[int, FlowFacts] = {}

    def scope(self, node: ScopeNode) -> Scope:
        return self.resolver.scope(node)

    def flow(self, node: ScopeNode) -> FlowFacts:
        """Fates of the sessions and connections created in ``node`` (a def or the module)."""
        found = self._flows.get(id(node))
        if found is None:
            if self._creates_nothing(node):
                found = FlowFacts(node)  # every fact is about a created value: none here
            else:
                found = FlowAnalyzer(self.resolver, node).run()
            self._flows[id(node)] = found
        return found

    def _creates_nothing(self, node: ScopeNode) -> bool:
        """Whether no call of ``node``'s own scope can create a session or connection
        (what the flow analysis calls a site), so it would find nothing."""
        if isinstance(node, cst.Lambda):
            return False
        scope = self.resolver.scope(node)
        own = node if isinstance(node, cst.Module) else node.body
        calls = list(scope_nodes_of(own, cst.Call))
        for definition in scope_nodes_of(own, cst.FunctionDef, cst.ClassDef):
            assert isinstance(definition, (cst.FunctionDef, cst.ClassDef))
            for decorator in definition.decorators:  # run in this scope
                calls.extend(sub for sub in walk(decorator) if isinstance(sub, cst.Call))
        for item in scope_nodes_of(own, cst.WithItem):
            assert isinstance(item, cst.WithItem)
            lent = strip_await(item.item)
            if (
                isinstance(lent, cst.Call)
                and item.asname is not None
                and isinstance(item.asname.name, cst.Name)
                and self.resolver.lent_session(lent, item.asname.name.value, scope) is not None
            ):
                return False  # ``with db.session_context() as session:``
        for call in calls:
            assert isinstance(call, cst.Call)
            kind = self.resolver.call_result_kind(call, scope)
            if kind is not None and kind.tag in ("session", "connection"):
                return False
            func = call.func
            if isinstance(func, cst.Attribute) and func.attr.value == "begin":
                base = self.resolver.kind(func.value, scope)
                if base is not None and base.tag in ("factory", "session_class"):
                    return False
        return True

    def flows(self) -> Iterator[FlowFacts]:
        return iter(self._flows.values())
