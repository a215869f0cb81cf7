"""Everything rules may ask about one file, computed lazily and at most once."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from sessionlint.analysis.flow import FlowAnalyzer, FlowFacts
from sessionlint.analysis.project import ProjectIndex
from sessionlint.analysis.scope import Resolver, Scope, ScopeNode


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
            found = FlowAnalyzer(self.resolver, node).run()
            self._flows[id(node)] = found
        return found

    def flows(self) -> Iterator[FlowFacts]:
        return iter(self._flows.values())
