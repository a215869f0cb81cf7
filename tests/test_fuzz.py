"""Property tests: no input makes the linter fail, and stage 1 never loses a finding.

Three generators:

* session code built from a small grammar of what the rules look at (sessions,
  connections, registries, `with`/`try`/loops/early exits, threads, closures),
  nested at random: the path analysis must survive every combination, and the
  findings must be the same with and without stage 1;
* arbitrary valid Python (hypothesmith, from the language grammar) behind a
  SQLAlchemy header, so it reaches stage 2;
* arbitrary bytes and broken fixtures: an input error (SES001/SES002), never an
  internal error.

In CI (`CI=true`) the examples are derandomised, so a run is reproducible; locally
each run draws new ones. A failure prints the smallest example hypothesis found.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import hypothesmith
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixture_support import lint, scenarios
from sessionlint.diagnostics import Diagnostic

settings.register_profile(
    "sessionlint",
    deadline=None,
    database=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("sessionlint")

HEADER = '''\
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

engine = create_engine("mysql+pymysql://app@db/app")
SessionLocal = sessionmaker(bind=engine)
Registry = scoped_session(SessionLocal)
pool = ThreadPoolExecutor()


def work(*args):
    return args


class Loader(threading.Thread):
    def __init__(self, session):
        super().__init__()
        self.session = session
'''


def lint_file(name: str, content: str | bytes, *, same_without_stage1: bool = True) -> list[Diagnostic]:
    """Findings in a one-file throwaway project. Any internal error fails the test,
    and so does a difference with stage 1 off (unless told not to look)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        found = lint(root, [path], True)
        if same_without_stage1:
            assert found == lint(root, [path], False)
        return found


# -- session code from a grammar ------------------------------------------------------

Render = Callable[[int, bool], list[str]]
VARS = ("s", "conn", "t")

_SIMPLE = (
    "{v} = SessionLocal()",
    "{v} = Session(engine)",
    "{v} = Registry()",
    "{v} = engine.connect()",
    "{v}.add(item)",
    "{v}.flush()",
    "{v}.commit()",
    "{v}.rollback()",
    "{v}.close()",
    "{v}.execute(text('SELECT 1'))",
    "Registry.remove()",
    "return {v}",
    "return None",
    "raise ValueError(item)",
    "yield {v}",
    "items.append({v})",
    "self_like = {{'session': {v}}}",
    "threading.Thread(target=work, args=({v},)).start()",
    "pool.submit(lambda: {v}.commit())",
    "engine2 = create_engine('mysql://x@h/db')",
    "{v} = None",
    "del {v}",
    "pass",
    "@loop",  # break / continue inside a loop, pass outside
    # Sessions on `self` (module-level functions read an undefined `self`: still
    # valid Python, and the linter must cope).
    "self.session = {v}",
    "self.session.commit()",
    "threading.Thread(target=self.job_0).start()",
    "pool.submit(self.job_0, {v})",
    "Loader({v}).start()",
)


def _simple(template: str, var: str) -> Render:
    def render(indent: int, in_loop: bool) -> list[str]:
        text = template.format(v=var)
        if text == "@loop":
            text = ("break" if var == "s" else "continue") if in_loop else "pass"
        return [" " * indent + text]

    return render


def _block(head: str, body: list[Render], loop: bool | None = None) -> Render:
    def render(indent: int, in_loop: bool) -> list[str]:
        inner = in_loop if loop is None else loop
        lines = [" " * indent + head]
        for stmt in body or [_simple("pass", "s")]:
            lines.extend(stmt(indent + 4, inner))
        return lines

    return render


def _compound(children: st.SearchStrategy[list[Render]]) -> st.SearchStrategy[Render]:
    var = st.sampled_from(VARS)

    def seq(*parts: Render) -> Render:
        def render(indent: int, in_loop: bool) -> list[str]:
            return [line for part in parts for line in part(indent, in_loop)]

        return render

    return st.one_of(
        st.builds(lambda v, b: _block(f"with SessionLocal() as {v}:", b), var, children),
        st.builds(lambda v, b: _block(f"with {v}.begin():", b), var, children),
        st.builds(lambda v, b: _block(f"with engine.connect() as {v}:", b), var, children),
        st.builds(lambda a, b: seq(_block("if cond:", a), _block("else:", b)), children, children),
        st.builds(lambda b: _block("for item in items:", b, loop=True), children),
        st.builds(lambda b: _block("while cond:", b, loop=True), children),
        st.builds(
            lambda a, b: seq(_block("try:", a), _block("except IntegrityError:", b)), children, children
        ),
        st.builds(lambda a, b: seq(_block("try:", a), _block("finally:", b)), children, children),
        st.builds(
            lambda a, b, c: seq(_block("try:", a), _block("except Exception:", b), _block("finally:", c)),
            children,
            children,
            children,
        ),
        st.builds(lambda b: _block("def inner():", b, loop=False), children),
    )


_statements: st.SearchStrategy[Render] = st.recursive(
    st.builds(_simple, st.sampled_from(_SIMPLE), st.sampled_from(VARS)),
    lambda inner: _compound(st.lists(inner, min_size=1, max_size=3)),
    max_leaves=40,
)


@st.composite
def session_modules(draw: st.DrawFn) -> str:
    """One to three functions, as module-level functions or as methods of a class
    whose `__init__` opens `self.session`."""
    in_class = draw(st.booleans())
    indent = 4 if in_class else 0
    functions = []
    for n in range(draw(st.integers(min_value=1, max_value=3))):
        body = draw(st.lists(_statements, min_size=1, max_size=6))
        head = f"def job_{n}(self, items, cond):" if in_class else f"def job_{n}(items, cond):"
        lines = [" " * indent + head, *(line for stmt in body for line in stmt(indent + 4, False))]
        functions.append("\n".join(lines))
    if in_class:
        init = "    def __init__(self):\n        self.session = SessionLocal()"
        return HEADER + "\n\nclass Worker:\n" + init + "\n\n" + "\n\n".join(functions) + "\n"
    return HEADER + "\n\n" + "\n\n\n".join(functions) + "\n"


def _compiles(source: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # `1()` and the like are valid
        try:
            compile(source, "generated.py", "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


@given(session_modules())
@settings(max_examples=75)
def test_generated_session_code_checks_cleanly_and_stage1_loses_nothing(source: str) -> None:
    assert _compiles(source)  # the generator writes valid Python
    with_stage1 = lint_file("app.py", source)
    lines = source.count("\n") + 1
    assert all(1 <= d.line <= lines and d.code.startswith("SES") for d in with_stage1)
    assert not [d for d in with_stage1 if d.code in ("SES001", "SES002")]
    # Findings follow what the code does, not what its variables are called.
    renamed = re.sub(r"\bs\b", "db_session", re.sub(r"\bt\b", "other", source))
    assert {(d.line, d.code) for d in lint_file("app.py", renamed, same_without_stage1=False)} == {
        (d.line, d.code) for d in with_stage1
    }


# -- arbitrary Python -------------------------------------------------------------------


@given(hypothesmith.from_grammar())
@settings(max_examples=40)
def test_arbitrary_python_never_breaks_the_linter(code: str) -> None:
    if "__future__" in code:
        code = ""  # a future import must come first: the header would make it invalid
    source = HEADER + "\n" + code
    if not _compiles(source):
        return  # hypothesmith is not exact about every rule of the compiler
    lint_file("app.py", source)


# -- bad input ---------------------------------------------------------------------------


@given(st.binary(max_size=300))
@settings(max_examples=100)
def test_arbitrary_bytes_are_input_errors_at_worst(data: bytes) -> None:
    found = lint_file("blob.py", data)
    assert all(d.code in ("SES001", "SES002") for d in found), found


_FIXTURE_SOURCES = sorted(
    (f for s in scenarios() for f in s.files() if f.suffix == ".py"), key=lambda p: str(p)
)


@given(st.sampled_from(_FIXTURE_SOURCES), st.data())
@settings(max_examples=100)
def test_broken_fixtures_are_input_errors_not_crashes(path: Path, data: st.DataObject) -> None:
    text = path.read_text(encoding="utf-8")
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    mangled = data.draw(
        st.sampled_from(
            [
                text[:cut],  # truncated mid-token
                text[:cut] + "\x00" + text[cut:],  # a NUL byte
                text[:cut] + "(" + text[cut:],  # an unclosed bracket
                text[:cut] + "\n  " + text[cut:],  # a stray indent
            ]
        )
    )
    found = lint_file("mangled.py", mangled)
    if not _compiles(mangled):
        assert any(d.code == "SES001" for d in found), found
