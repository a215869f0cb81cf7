"""Stage 1 (relevance) loses nothing: same findings with and without it."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from fixture_support import FIXTURES, Scenario, lint, scenarios
from sessionlint.analysis.project import ProjectIndex
from sessionlint.config import Settings

ALL = scenarios()


@pytest.mark.parametrize("scenario", ALL, ids=[s.id for s in ALL])
def test_fixture_findings_identical_with_and_without_stage1(scenario: Scenario) -> None:
    from fixture_support import read_expectations
    from sessionlint.config import parse_table

    files = scenario.files()
    config: dict[str, object] = {}
    for f in files:
        config.update(read_expectations(f.read_text(encoding="utf-8"), str(f)).config)
    settings = parse_table(config, scenario.id, Settings(root=scenario.root)) if config else None
    assert lint(scenario.root, files, True, settings) == lint(scenario.root, files, False, settings)


FILLER = '''

def helper_{n}(items, key=None):
    """Unrelated code: stage 1 should blank it, and nothing may change."""
    total = 0
    for item in items:
        if key is not None and item.get(key):
            total += len(str(item[key]))
    return {{"total": total, "session": "not a database session"}}


class Widget{n}:
    engine = "a car engine"

    def connect(self, other):
        return [self, other]
'''


def _blocks(path: Path) -> tuple[list[str], list[str]]:
    """(import lines, top-level def/class sources) of a fixture file."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    imports, blocks = [], []
    for node in tree.body:
        text = "\n".join(lines[node.lineno - 1 - len(getattr(node, "decorator_list", [])) : node.end_lineno])
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.col_offset == 0:
            imports.append(text)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            blocks.append("\n".join(lines[first - 1 : node.end_lineno]))
    return imports, blocks


def test_generated_corpus_findings_identical(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    sources = sorted(p for p in FIXTURES.rglob("*.py") if p.parent.parent == FIXTURES)
    app = tmp_path / "app"
    app.mkdir()
    (app / "db.py").write_text(
        "from sqlalchemy import create_engine\n"
        "from sqlalchemy.orm import scoped_session, sessionmaker\n\n"
        'engine = create_engine("postgresql://app@localhost/app")\n'
        "SessionLocal = sessionmaker(bind=engine)\n"
        "db_session = scoped_session(SessionLocal)\n"
    )
    (app / "__init__.py").write_text("from .db import SessionLocal as Factory, db_session\n")
    users = (
        "from app import Factory\nfrom app.db import engine\n\n\n"
        "def leak():\n    s = Factory()\n    return s.query(int).all()\n\n\n"
        "def ping():\n    conn = engine.connect()\n    return conn.execute('select 1')\n"
    )
    (app / "views_reexport.py").write_text(users)
    # A project alias of create_engine: the engine rules' stage 1 must still see it.
    (app / "compat.py").write_text("from sqlalchemy import create_engine as make_engine\n")
    (app / "reports.py").write_text(
        "from app.compat import make_engine\n\n\n"
        "def report_engine():\n"
        '    return make_engine("mysql+pymysql://u@h/db", max_overflow=-1)\n'
    )
    for n in range(60):
        picked = rng.sample(sources, 3)
        imports: list[str] = []
        blocks: list[str] = []
        for path in picked:
            i, b = _blocks(path)
            imports.extend(i)
            blocks.extend(b)
        rng.shuffle(blocks)
        body = "\n".join(dict.fromkeys(imports)) + "\n\n"
        for k, block in enumerate(blocks):
            body += "\n\n" + block + "\n"
            if rng.random() < 0.5:
                body += FILLER.format(n=f"{n}_{k}")
        try:
            ast.parse(body)
        except SyntaxError:
            continue
        (app / f"mod_{n}.py").write_text(body)
    (app / "broken.py").write_text("def broken(:\n    pass\n")
    files = sorted(app.rglob("*.py"))
    with_stage1 = lint(tmp_path, files, True)
    without = lint(tmp_path, files, False)
    assert with_stage1 == without
    codes = {d.code for d in with_stage1}
    assert {"SES001", "SES101", "SES103", "SES501", "SES502", "SES503"} <= codes, codes  # the rules are exercised
    assert any(d.code == "SES502" and d.path.endswith("reports.py") for d in with_stage1)
    assert len(with_stage1) > 15


BIG_MODULE_PART = '''

@decorate(
    "multi-line decorator {n}",
)
def make_{n}(session, registry):
    """Closes its parameter."""
    try:
        session.execute(text("select {n}"))
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
        registry.remove()


class Model{n}(Base):
    __tablename__ = "model_{n}"
    id = Column(Integer, primary_key=True)

    @property
    def label(self):
        return "model {n}"

    def reset(self, other):
        other.reset()


if FLAG_{n}:
    Session{n} = sessionmaker(bind=engine, expire_on_commit=False)
else:
    Session{n} = scoped_session(
        sessionmaker(bind=engine),
    )
try:
    from extra_{n} import Thing{n}
except ImportError:
    Thing{n} = None
'''


def test_big_files_parsed_in_chunks_give_the_same_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files over the chunking threshold are parsed top-level chunk by chunk; the facts
    (names, kinds, summaries, blocks and lines) must equal a whole-file parse's."""
    from sessionlint.analysis import project

    header = (
        "from sqlalchemy import Column, Integer, text\n"
        "from sqlalchemy.orm import scoped_session, sessionmaker\n"
        "from app.base import Base, decorate\n\nengine = None\n"
    )
    source = header + "".join(BIG_MODULE_PART.format(n=n) for n in range(400))
    assert len(source) > project._BIG_FILE
    (tmp_path / "big.py").write_text(source)
    parsed: list[int] = []
    real_parse = ast.parse

    def counting_parse(text: str | bytes, *args: object, **kwargs: object) -> ast.Module:
        parsed.append(len(text))
        return real_parse(text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(project.ast, "parse", counting_parse)
    lean = ProjectIndex(tmp_path, [str(tmp_path / "big.py")]).facts_for_path(str(tmp_path / "big.py"))
    monkeypatch.undo()
    assert len(parsed) > 400 and max(parsed) < 1000  # chunk by chunk, no whole-file fallback
    whole_tree = ast.parse(source)
    for node in whole_tree.body:  # what parse_lean keeps of a class
        if isinstance(node, ast.ClassDef):
            node.body = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    index = ProjectIndex(tmp_path, [str(tmp_path / "big.py")])
    whole = project._Summarizer(index, str(tmp_path / "big.py"), "big", project._method_lines(source)).run(whole_tree)
    assert lean == whole
    assert lean.blocks[-1][1] > 15_000 and lean.values["Session399"].line > 15_000
    assert lean.functions["make_399"].closes == frozenset({"session"})
    assert lean.methods["Model399"]["reset"].closes == frozenset({"other"})


POSITION_SAMPLES = sorted({p for s in ALL for p in s.files()}, key=str)


@pytest.mark.parametrize("path", POSITION_SAMPLES, ids=[str(p.relative_to(FIXTURES)) for p in POSITION_SAMPLES])
def test_positions_of_reported_nodes_match_libcst(path: Path) -> None:
    """The engine computes positions only for the top-level statements holding reported
    nodes; they must equal LibCST's PositionProvider over the whole module."""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    from sessionlint.analysis import calls, walk
    from sessionlint.engine import node_positions

    try:
        module = cst.parse_module(path.read_text(encoding="utf-8"))
    except cst.ParserSyntaxError:
        pytest.skip("not valid Python on purpose")
    full = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    nodes = [n for n in walk.walk(module) if isinstance(n, (cst.Call, cst.Name, cst.FunctionDef, cst.With, cst.Assign))]
    try:
        fast = node_positions(module, nodes)
    finally:
        walk.forget()
        calls.forget()
    assert {id(n): fast[n] for n in nodes} == {id(n): full[n] for n in nodes}


@pytest.mark.parametrize(
    "source",
    [
        "# header\r\n\r\nimport x\r\n\r\n\r\n@deco\r\ndef f():\r\n    s = Session()\r\n    return s.query(1)\r\n",
        "\n\n# c\n\x0c\ndef f():\n    pass\n\x0c\n\nclass A:\n    def m(self):\n        g(1)\n\nh(2)",
        "x = (\n  1,\n)\nif x:\n    y = [\n        call(a)\n    ]\nelse:\n    pass\n",
    ],
)
def test_positions_with_unusual_line_breaks(source: str) -> None:
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    from sessionlint.analysis import calls, walk
    from sessionlint.engine import node_positions

    module = cst.parse_module(source)
    full = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    nodes = [n for n in walk.walk(module) if isinstance(n, (cst.Call, cst.Name, cst.FunctionDef))]
    try:
        fast = node_positions(module, nodes)
    finally:
        walk.forget()
        calls.forget()
    assert nodes and {id(n): fast[n] for n in nodes} == {id(n): full[n] for n in nodes}


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_form_feeds_and_line_ends_do_not_shift_blanked_blocks(tmp_path: Path, newline: str) -> None:
    """Stage 1 blanks blocks by line number; a form feed (a line separator for
    str.splitlines, not for Python) or CR-only line ends must not shift them."""
    lines = [
        "from sqlalchemy.orm import sessionmaker", "\x0c", "SessionLocal = sessionmaker()", "", "",
        "def unrelated():", "    return 1", "", "", "def leak():", "    s = SessionLocal()",
        "    return s.query(int).all()", "", "", "def helper(s):", "    s.close()", "",
    ]
    path = tmp_path / "m.py"
    path.write_bytes(newline.join(lines).encode())
    with_stage1 = lint(tmp_path, [path], True)
    assert [(d.line, d.code) for d in with_stage1] == [(11, "SES101")]
    assert with_stage1 == lint(tmp_path, [path], False)


@pytest.mark.parametrize(
    "source",
    [
        "type Renderer = Callable[[int], str]\n",
        "class Filter[Q](list[Q]):\n    pass\n",
        "try:\n    pass\nexcept OSError, ValueError:\n    pass\n",
    ],
    ids=["pep695-alias", "pep695-class", "pep758-except"],
)
def test_newer_python_syntax_is_no_input_error(tmp_path: Path, source: str) -> None:
    # A file in Python newer than the interpreter (polar uses 3.12 and 3.14 syntax)
    # that names no SQLAlchemy: stage 1 checks it with this Python's parser, stage 2
    # would parse it with LibCST. Both must agree that it is valid.
    (tmp_path / "modern.py").write_text(source)
    (tmp_path / "broken.py").write_text("def broken(:\n")
    files = [tmp_path / "modern.py", tmp_path / "broken.py"]
    with_stage1, without = lint(tmp_path, files, True), lint(tmp_path, files, False)
    assert with_stage1 == without
    assert [(Path(d.path).name, d.code) for d in with_stage1] == [("broken.py", "SES001")]
