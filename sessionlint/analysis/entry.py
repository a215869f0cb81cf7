"""Functions that start a unit of work: run once per process (a ``main``, a CLI
command, a test), or once per request (a route, a view method). Shared by the rules
that judge what outlives such a function."""

from __future__ import annotations

import libcst as cst

from sessionlint.analysis.calls import call_index, per_module
from sessionlint.analysis.project import HTTP_METHODS, ROUTE_DECORATORS, VIEW_BASES
from sessionlint.analysis.scope import Resolver, dotted

def is_entry_point(resolver: Resolver, fn: cst.FunctionDef) -> bool:
    """A function that runs once per process: called at module level of its own module
    (``if __name__ == "__main__": main()``, Alembic's ``run_migrations_online()``),
    a CLI command (``@click.command()``, ``@app.cli.command()``), or a pytest test."""
    if fn.name.value.startswith("test_"):
        return True
    module_scope = resolver.scope(resolver.module)
    for decorator in fn.decorators:
        expr = decorator.decorator
        if isinstance(expr, cst.Call):
            expr = expr.func
        qname = resolver.qualify(expr, module_scope) or ""
        if qname.split(".")[0] in ("click", "typer"):
            return True
        if isinstance(expr, cst.Attribute) and expr.attr.value == "command":
            return True
    parent = resolver.scope(fn).parent
    if parent is None or not parent.is_module or resolver.enclosing_class(fn) is not None:
        return False
    return fn.name.value in _called_at_import(resolver.module)


def _called_at_import(module: cst.Module) -> frozenset[str]:
    return per_module(
        module,
        "import-calls",
        lambda: frozenset(
            c.call.func.value
            for c in call_index(module).calls
            if isinstance(c.scope, cst.Module) and not c.in_class_body and isinstance(c.call.func, cst.Name)
        ),
    )


def is_request_handler(resolver: Resolver, fn: cst.FunctionDef) -> bool:
    """A route-decorated function (``@app.route``, ``@router.get``) or an HTTP method of
    a class-based view: the framework runs it once per request and ends the request's
    database scope after it."""
    for decorator in fn.decorators:
        expr = decorator.decorator
        if isinstance(expr, cst.Call):
            expr = expr.func
        if isinstance(expr, cst.Attribute) and expr.attr.value in ROUTE_DECORATORS:
            return True
    cls = resolver.enclosing_class(fn)
    if cls is None or fn.name.value not in HTTP_METHODS:
        return False
    return any((dotted(base.value) or "").rsplit(".", 1)[-1].endswith(VIEW_BASES) for base in cls.bases)


def starts_unit_of_work(resolver: Resolver, fn: cst.FunctionDef) -> bool:
    return is_request_handler(resolver, fn) or is_entry_point(resolver, fn)
