"""Generate a large, deterministic, realistic Python monorepo to benchmark linters on.

Run:  .venv/bin/python benchmarks/corpus.py [DIR] [--seed N] [--scale F]

DIR defaults to /tmp/sessionlint-corpus (replaced if it exists and holds a previous
corpus). The default size is about 520k lines in about 2,300 files:

* several service packages (``orders``, ``billing``, ...), each with a ``db.py``
  (``engine = create_engine(...)``, ``SessionLocal = sessionmaker(...)``, a
  ``scoped_session`` registry, ``session_scope()``), per-domain ``models.py``,
  ``repository.py``, ``queries.py`` and ``service.py`` importing SQLAlchemy, alembic
  migrations, and ``views.py``/``tasks.py`` that use the project's factories from
  ``db.py`` without importing SQLAlchemy themselves;
* shared libraries and most domain modules unrelated to the database: utilities,
  parsers, business rules, dataclasses, classes with many methods, comprehensions,
  f-strings, decorators, annotations, async clients;
* a ``tests/`` tree (pytest style, a conftest with an SQLite engine);
* three huge generated files: a protobuf-like module and a generated SQLAlchemy models
  module of about 30k lines each, and a constants/table module of about 15k lines;
* a few percent of the session-using functions misuse sessions (unclosed sessions,
  ``except`` without rollback, an engine per call, MySQL URLs without
  ``pool_recycle``, ...), so a checker has real findings.

About 20-25% of the files import sqlalchemy. Every file is checked with ``compile()``.
The root has a ``pyproject.toml`` with an empty ``[tool.sessionlint]`` and an empty
``[tool.ruff]`` (plain defaults), a ``.flake8`` with defaults, a ``.gitignore`` (one
ignored scratch directory exists), and ``git init`` is run so that tools honouring
.gitignore only inside a repository see it. ``.corpus-stats.json`` at the root
records the shape and the file that the benchmark touches.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_DIR = "/tmp/sessionlint-corpus"
MARKER = ".corpus-stats.json"

NOUNS = (
    "order item customer invoice line price total amount record entry payload result "
    "config option token chunk batch row key value name label status count index offset "
    "limit page cursor user account address region currency rate discount tax sku "
    "quantity warehouse shipment carrier event message topic retry delay timeout handler "
    "request response header body path query field schema report metric bucket window "
    "span trace profile session_info plan tier coupon balance ledger refund payment "
    "vendor product category tag score weight threshold deadline slot quota"
).split()
VERBS = (
    "get build compute parse load normalize validate render merge split apply resolve "
    "collect format convert filter group sort fetch update sync emit dispatch score rank "
    "prepare check extract encode decode summarize reconcile allocate estimate"
).split()
SUFFIXES = "Manager Builder Parser Service Policy Calculator Registry Handler Formatter Resolver Index Cache Planner Router".split()
SERVICES = ["orders", "billing", "inventory", "accounts", "shipping", "catalog", "notifications", "reporting"]
DOMAINS = (
    "checkout refunds pricing invoices ledger stock warehouses suppliers users teams "
    "permissions carriers tracking returns products categories reviews emails sms "
    "webhooks dashboards exports metrics promotions subscriptions payouts audits "
    "addresses sessions_admin quotas"
).split()
LIBS = ["acme_common", "acme_text", "acme_http", "acme_events", "acme_config", "acme_geo"]


def camel(*words: str) -> str:
    return "".join(w.replace("_", " ").title().replace(" ", "") for w in words)


class Code:
    """Generates plausible Python statements; tracks the modules a file uses."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.imports: set[str] = set()
        self.from_imports: dict[str, set[str]] = {}

    # -- naming -------------------------------------------------------------
    def noun(self) -> str:
        return self.rng.choice(NOUNS)

    def fname(self) -> str:
        r = self.rng
        if r.random() < 0.4:
            return f"{r.choice(VERBS)}_{r.choice(NOUNS)}_{r.choice(NOUNS)}"
        return f"{r.choice(VERBS)}_{r.choice(NOUNS)}"

    def cname(self) -> str:
        r = self.rng
        words = [r.choice(NOUNS)] + ([r.choice(NOUNS)] if r.random() < 0.4 else [])
        return camel(*words) + r.choice(SUFFIXES)

    def use(self, module: str, name: str | None = None) -> None:
        if name is None:
            self.imports.add(module)
        else:
            self.from_imports.setdefault(module, set()).add(name)

    def header(self, doc: str, extra: list[str] | None = None) -> list[str]:
        lines = [f'"""{doc}"""', "", "from __future__ import annotations", ""]
        for m in sorted(self.imports):
            lines.append(f"import {m}" if " as " not in m else f"import {m}")
        for m in sorted(self.from_imports):
            names = sorted(self.from_imports[m])
            lines.append(f"from {m} import {', '.join(names)}")
        if extra:
            lines.extend(extra)
        lines.append("")
        return lines

    # -- expressions --------------------------------------------------------
    def expr(self, names: list[str]) -> str:
        r = self.rng
        v = r.choice(names) if names else "None"
        w = r.choice(names) if names else "0"
        k = self.noun()
        choice = r.randrange(22)
        if choice == 0:
            return f"[x for x in {v} if x]"
        if choice == 1:
            return f"{{str(k): v for k, v in enumerate({v})}}"
        if choice == 2:
            return f'f"{{{v}}}-{{{w}!r}}"'
        if choice == 3:
            return f'f"{k}={{{v}:>8}} ({{len(str({w}))}} chars)"'
        if choice == 4:
            return f'{v}.get("{k}", {r.randint(0, 100)}) if isinstance({v}, dict) else {w}'
        if choice == 5:
            return f'sorted({v}, key=lambda r: str(r))[:{r.randint(2, 50)}]'
        if choice == 6:
            return f"sum(1 for _ in {v}) if {v} else {r.randint(0, 9)}"
        if choice == 7:
            return f'str({v}).strip().lower().replace("-", "_")'
        if choice == 8:
            self.use("re")
            return f're.sub(r"[^a-z0-9_]+", "_", str({v}))'
        if choice == 9:
            return f"len({v}) * {r.randint(2, 1000)} + {r.randint(0, 99)}"
        if choice == 10:
            self.use("json")
            return f"json.dumps({{'{k}': {v}, 'n': {r.randint(0, 9)}}}, sort_keys=True)"
        if choice == 11:
            return f"({v}, {w}) if {v} is not None else ({w}, None)"
        if choice == 12:
            self.use("itertools")
            return f"list(itertools.islice({v}, {r.randint(1, 20)}))"
        if choice == 13:
            return f"max({r.randint(0, 5)}, min({r.randint(50, 500)}, len({v})))"
        if choice == 14:
            self.use("datetime", None)
            return f"datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds={r.randint(1, 86400)})"
        if choice == 15:
            return f'"{k}" in {v} or {w} is None'
        if choice == 16:
            return f"{{*{v}}} if not isinstance({v}, (str, bytes)) else set()"
        if choice == 17:
            return f"round(float({r.randint(1, 99)}) * {r.random():.3f}, {r.randint(0, 4)})"
        if choice == 18:
            return f'"{k}_" + str({v})[:{r.randint(4, 32)}]'
        if choice == 19:
            return f"[(i, y) for i, y in enumerate({v}) if i % {r.randint(2, 7)} == 0]"
        if choice == 20:
            return f'{{"{k}": {v}, "{self.noun()}": {w}}}'
        return f"{v} or {w}"

    def cond(self, names: list[str]) -> str:
        r = self.rng
        v = r.choice(names)
        c = r.randrange(8)
        if c == 0:
            return f"not {v}"
        if c == 1:
            return f"{v} is None"
        if c == 2:
            return f"isinstance({v}, (list, tuple))"
        if c == 3:
            return f"len(str({v})) > {r.randint(3, 80)}"
        if c == 4:
            return f'str({v}).startswith("{self.noun()[:3]}")'
        if c == 5:
            return f"{v} and {r.choice(names)}"
        if c == 6:
            return f'"{self.noun()}" in str({v})'
        return f"bool({v})"

    # -- statements ---------------------------------------------------------
    def stmts(self, names: list[str], depth: int, count: int, is_async: bool = False) -> list[str]:
        r = self.rng
        out: list[str] = []
        names = list(names) or ["_unused"]
        if names == ["_unused"]:
            out.append("_unused = None")
        for _ in range(count):
            kind = r.randrange(16) if depth < 2 else r.randrange(5)
            new = f"{self.noun()}_{r.choice(['value', 'items', 'map', 'text', 'count', 'parts', 'data'])}"
            if kind <= 3:
                out.append(f"{new} = {self.expr(names)}")
                names.append(new)
            elif kind == 4:
                self.use("logging")
                out.append(f'logger.{r.choice(["debug", "info", "warning"])}("{self.fname()}: %s", {r.choice(names)})')
            elif kind in (5, 6):
                out.append(f"if {self.cond(names)}:")
                out += ind(self.stmts(names, depth + 1, r.randint(1, 3), is_async))
                if r.random() < 0.3:
                    out.append(f"elif {self.cond(names)}:")
                    out += ind(self.stmts(names, depth + 1, r.randint(1, 2), is_async))
                if r.random() < 0.5:
                    out.append("else:")
                    out += ind(self.stmts(names, depth + 1, r.randint(1, 2), is_async))
            elif kind == 7:
                loopvar = self.noun()
                acc = f"{loopvar}_acc"
                out.append(f"{acc} = []")
                src = r.choice(names)
                out.append(f"for {loopvar} in {src} if isinstance({src}, (list, tuple)) else []:")
                body = self.stmts(names + [loopvar], depth + 1, r.randint(1, 3), is_async)
                body.append(f"{acc}.append({loopvar})")
                out += ind(body)
                names.append(acc)
            elif kind == 8:
                out.append("try:")
                out += ind([f"{new} = int(str({r.choice(names)}).split(',')[0])"])
                exc = r.choice(["ValueError", "(TypeError, ValueError)", "KeyError", "IndexError"])
                out.append(f"except {exc}:")
                out += ind([f"{new} = {r.randint(-1, 10)}"])
                names.append(new)
            elif kind == 9:
                out.append(f"{new} = [")
                out.append(f"    {self.expr(names)}")
                out.append(f"    for {self.noun()} in range({r.randint(2, 40)})")
                out.append("]")
                names.append(new)
            elif kind == 10:
                out.append(f"match {r.choice(names)}:")
                for lit in r.sample(["0", "1", '"a"', '"b"', "None", "[]", "{}"], 2):
                    out.append(f"    case {lit}:")
                    out += ind(ind(self.stmts(names, depth + 1, 1, is_async)))
                out.append("    case _:")
                out.append("        pass")
            elif kind == 11 and is_async:
                self.use("asyncio")
                out.append(f"await asyncio.sleep({r.choice(['0', '0.01', '0.1'])})")
            elif kind == 11:
                out.append(f"assert {self.cond(names)} or True")
            elif kind == 12:
                counter = f"{self.noun()}_attempts"
                out.append(f"{counter} = 0")
                out.append(f"while {counter} < {r.randint(2, 10)}:")
                out += ind([f"{counter} += 1", f"if {self.cond(names)}:", "    break"])
            elif kind == 13:
                out.append(f"if {self.cond(names)}:")
                out.append(f'    raise ValueError(f"invalid {self.noun()}: {{{r.choice(names)}!r}}")')
            elif kind == 14:
                out.append(f"{new}: dict[str, object] = {{}}")
                out.append(f"{new}.update({{str(i): {r.choice(names)} for i in range({r.randint(1, 9)})}})")
                names.append(new)
            else:
                out.append(f"{new} = {self.expr(names)}")
                out.append(f"{new} = {new} if {new} is not None else {r.choice(names)}")
                names.append(new)
        return out

    def function(self, name: str | None = None, is_async: bool = False, method: bool = False,
                 decorators: list[str] | None = None) -> list[str]:
        r = self.rng
        name = name or self.fname()
        params = r.sample(NOUNS, r.randint(1, 4))
        ann = r.random() < 0.7
        ptxt = ", ".join(
            f"{p}: {r.choice(['str', 'int', 'list[str]', 'dict[str, Any]', 'Any', 'float | None'])}" if ann else p
            for p in params
        )
        if ann:
            self.use("typing", "Any")
        if method:
            ptxt = "self, " + ptxt
        if r.random() < 0.25:
            ptxt += f", *, {self.noun()}_flag: bool = False"
        ret = f" -> {r.choice(['Any', 'dict[str, Any]', 'list[Any]', 'str | None', 'int'])}" if ann else ""
        lines = list(decorators or [])
        lines.append(f"{'async ' if is_async else ''}def {name}({ptxt}){ret}:")
        body: list[str] = []
        if r.random() < 0.5:
            body.append(f'"""{r.choice(VERBS).title()} the {self.noun()} for the given {params[0]}."""')
        body += self.stmts(params, 0, r.randint(2, 8), is_async)
        body.append(f"return {r.choice(params)}")
        return lines + ind(body) + [""]


def ind(lines: list[str], n: int = 1) -> list[str]:
    pad = "    " * n
    return [pad + ln if ln else ln for ln in lines]


# ---------------------------------------------------------------------------
# non-database modules
# ---------------------------------------------------------------------------


def module_utils(rng: random.Random, doc: str) -> str:
    c = Code(rng)
    body: list[str] = []
    c.use("logging")
    for _ in range(rng.randint(4, 14)):
        body += c.function(is_async=False) + [""]
    return finish(c, doc, body, logger=True)


def module_dataclasses(rng: random.Random, doc: str) -> str:
    c = Code(rng)
    c.use("dataclasses", "dataclass")
    c.use("dataclasses", "field")
    c.use("typing", "Any")
    body: list[str] = []
    for _ in range(rng.randint(3, 12)):
        cls = camel(c.noun(), c.noun()) + rng.choice(["Data", "Spec", "Snapshot", "Row", "Payload"])
        frozen = rng.random() < 0.4
        body.append(f"@dataclass{'(frozen=True, slots=True)' if frozen else ''}")
        body.append(f"class {cls}:")
        fields = rng.sample(NOUNS, rng.randint(3, 9))
        lines = [f'"""A {fields[0]} snapshot."""', ""]
        for i, f in enumerate(fields):
            t = rng.choice(["str", "int", "float", "bool", "list[str]", "dict[str, Any]", "str | None"])
            if i >= len(fields) // 2:
                default = {"str": '""', "int": "0", "float": "0.0", "bool": "False", "str | None": "None"}.get(t)
                lines.append(f"{f}: {t} = {default}" if default else f"{f}: {t} = field(default_factory={t.split('[')[0]})")
            else:
                lines.append(f"{f}: {t}")
        lines += ["", "@classmethod", f"def from_dict(cls, raw: dict[str, Any]) -> {cls}:",
                  f"    return cls(**{{k: raw[k] for k in ({', '.join(repr(f) for f in fields)},) if k in raw}})", "",
                  "def to_dict(self) -> dict[str, Any]:",
                  "    return {" + ", ".join(f'"{f}": self.{f}' for f in fields) + "}", "",
                  "@property", f"def {fields[0]}_label(self) -> str:",
                  f'    return f"{{self.{fields[0]}!s}}/{{self.{fields[-1]}!r}}"', ""]
        body += ind(lines) + ["", ""]
    for _ in range(rng.randint(1, 5)):
        body += c.function() + [""]
    return finish(c, doc, body)


def module_class_heavy(rng: random.Random, doc: str) -> str:
    c = Code(rng)
    c.use("logging")
    body: list[str] = []
    for _ in range(rng.randint(1, 2)):
        cls = c.cname()
        base = rng.choice(["", "(Exception)", "(dict)", ""]) if rng.random() < 0.2 else ""
        body.append(f"class {cls}{base}:")
        attrs = rng.sample(NOUNS, rng.randint(2, 6))
        members = [f'"""{cls} keeps {attrs[0]} state."""', ""]
        members.append(f"def __init__(self, {', '.join(f'{a}=None' for a in attrs)}) -> None:")
        members += ind([f"self.{a} = {a}" for a in attrs] + ["self._cache: dict[str, object] = {}"])
        members.append("")
        members += [f"def __repr__(self) -> str:",
                    f'    return f"{cls}({attrs[0]}={{self.{attrs[0]}!r}})"', ""]
        for _ in range(rng.randint(5, 18)):
            deco = []
            r = rng.random()
            if r < 0.1:
                deco = ["@property"]
                members += deco + [f"def {c.noun()}_{rng.choice(['view', 'state', 'flag'])}(self) -> object:",
                                   f"    return self._cache.get({attrs[0]!r}, self.{rng.choice(attrs)})", ""]
                continue
            if r < 0.2:
                c.use("functools")
                deco = [f"@functools.lru_cache(maxsize={rng.choice([32, 128, 1024])})"]
            elif r < 0.25:
                deco = ["@staticmethod"]
                members += deco + c.function()
                continue
            members += c.function(method=True, decorators=deco)
        body += ind(members) + ["", ""]
    return finish(c, doc, body, logger=True)


def module_parsing(rng: random.Random, doc: str) -> str:
    c = Code(rng)
    c.use("re")
    c.use("dataclasses", "dataclass")
    c.use("collections.abc", "Iterator")
    kinds = rng.sample([n.upper() for n in NOUNS], rng.randint(4, 9))
    body = [f"TOKEN_RE = re.compile(", "    r\"\"\""]
    for k in kinds:
        pattern = rng.choice(TOKEN_PATTERNS)
        body.append(f"    (?P<{k}>{pattern})|")
    body += ["    (?P<OTHER>.)", '    """,', "    re.VERBOSE,", ")", "", ""]
    body += ["@dataclass(frozen=True)", "class Token:", "    kind: str", "    text: str", "    pos: int", "", "",
             "def tokenize(source: str) -> Iterator[Token]:",
             "    for m in TOKEN_RE.finditer(source):",
             "        kind = m.lastgroup or 'OTHER'",
             "        if kind == 'OTHER' and m.group().isspace():",
             "            continue",
             "        yield Token(kind, m.group(), m.start())", "", ""]
    pname = camel(c.noun()) + "Parser"
    body += [f"class {pname}:", "    def __init__(self, source: str) -> None:",
             "        self.tokens = list(tokenize(source))", "        self.pos = 0", "",
             "    def peek(self) -> Token | None:",
             "        return self.tokens[self.pos] if self.pos < len(self.tokens) else None", "",
             "    def advance(self) -> Token:", "        tok = self.tokens[self.pos]", "        self.pos += 1",
             "        return tok", "",
             "    def expect(self, kind: str) -> Token:", "        tok = self.peek()",
             "        if tok is None or tok.kind != kind:",
             '            raise SyntaxError(f"expected {kind} at {self.pos}, got {tok!r}")',
             "        return self.advance()", ""]
    for k in kinds:
        body += [f"    def parse_{k.lower()}(self) -> list[str]:", "        out: list[str] = []",
                 "        while (tok := self.peek()) is not None:",
                 f"            if tok.kind == {k!r}:", "                out.append(self.advance().text)",
                 f"            elif tok.kind in ({', '.join(repr(x) for x in rng.sample(kinds, 2))}):",
                 "                self.advance()", "            else:", "                break",
                 "        return out", ""]
    body.append("")
    for _ in range(rng.randint(2, 8)):
        body += c.function() + [""]
    return finish(c, doc, body)


def module_async(rng: random.Random, doc: str) -> str:
    c = Code(rng)
    c.use("asyncio")
    c.use("logging")
    c.use("typing", "Any")
    cls = camel(c.noun()) + "Client"
    body = [f"class {cls}:",
            "    def __init__(self, base_url: str, *, timeout: float = 5.0, retries: int = 3) -> None:",
            "        self.base_url = base_url.rstrip('/')", "        self.timeout = timeout",
            "        self.retries = retries", "        self._lock = asyncio.Lock()",
            "        self._inflight: dict[str, asyncio.Future[Any]] = {}", "",
            "    async def __aenter__(self) -> " + cls + ":", "        return self", "",
            "    async def __aexit__(self, *exc: object) -> None:", "        await self.aclose()", "",
            "    async def aclose(self) -> None:",
            "        for fut in self._inflight.values():", "            fut.cancel()", ""]
    for _ in range(rng.randint(3, 10)):
        n = c.noun()
        body += [f"    async def fetch_{n}(self, {n}_id: str) -> dict[str, Any]:",
                 "        async with self._lock:",
                 f'            url = f"{{self.base_url}}/{n}s/{{{n}_id}}"',
                 "        for attempt in range(self.retries):", "            try:",
                 "                return await asyncio.wait_for(self._get(url), timeout=self.timeout)",
                 "            except asyncio.TimeoutError:",
                 '                logger.warning("timeout on %s (attempt %d)", url, attempt)',
                 "                await asyncio.sleep(2 ** attempt * 0.1)",
                 f'        raise TimeoutError(f"gave up on {n} {{{n}_id}}")', ""]
    body += ["    async def _get(self, url: str) -> dict[str, Any]:", "        await asyncio.sleep(0)",
             '        return {"url": url}', "", "",
             f"async def gather_all(client: {cls}, ids: list[str]) -> list[Any]:",
             "    sem = asyncio.Semaphore(8)", "",
             "    async def one(i: str) -> Any:", "        async with sem:",
             "            return await client._get(i)",
             "", "    return await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)", "", "",
             "async def stream(items: list[Any]):",
             "    for i, item in enumerate(items):", "        if i % 100 == 0:",
             "            await asyncio.sleep(0)", "        yield item", "", ""]
    for _ in range(rng.randint(2, 7)):
        body += c.function(is_async=rng.random() < 0.7) + [""]
    return finish(c, doc, body, logger=True)


def module_decorators(rng: random.Random, doc: str) -> str:
    c = Code(rng)
    c.use("functools")
    c.use("time")
    c.use("logging")
    c.use("collections.abc", "Callable")
    c.use("typing", "TypeVar")
    c.use("typing", "ParamSpec")
    body = ['P = ParamSpec("P")', 'R = TypeVar("R")', "", "",
            "def retry(times: int = 3, delay: float = 0.0) -> Callable[[Callable[P, R]], Callable[P, R]]:",
            "    def deco(fn: Callable[P, R]) -> Callable[P, R]:", "        @functools.wraps(fn)",
            "        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:",
            "            last: Exception | None = None", "            for attempt in range(times):",
            "                try:", "                    return fn(*args, **kwargs)",
            "                except Exception as exc:  # noqa: BLE001", "                    last = exc",
            '                    logger.info("retry %s #%d: %s", fn.__name__, attempt, exc)',
            "                    time.sleep(delay)", "            assert last is not None",
            "            raise last", "", "        return wrapper", "", "    return deco", "", "",
            "def timed(fn: Callable[P, R]) -> Callable[P, R]:", "    @functools.wraps(fn)",
            "    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:",
            "        start = time.perf_counter()", "        try:", "            return fn(*args, **kwargs)",
            "        finally:",
            '            logger.debug("%s took %.3fs", fn.__qualname__, time.perf_counter() - start)',
            "", "    return wrapper", "", "", "def task(**options: object) -> Callable[[Callable[P, R]], Callable[P, R]]:",
            '    """Register a background task (a stand-in for a queue library\'s decorator)."""',
            "    def deco(fn: Callable[P, R]) -> Callable[P, R]:",
            "        TASKS[fn.__name__] = (fn, dict(options))", "        return fn", "", "    return deco", "", "",
            "TASKS: dict[str, tuple[Callable[..., object], dict[str, object]]] = {}", "", ""]
    for _ in range(rng.randint(3, 9)):
        deco = rng.choice([["@retry(times=5)"], ["@timed"], ["@timed", "@retry()"], []])
        body += c.function(decorators=deco) + [""]
    return finish(c, doc, body, logger=True)


def module_enums(rng: random.Random, doc: str) -> str:
    c = Code(rng)
    c.use("enum")
    c.use("typing", "NamedTuple")
    c.use("typing", "Protocol")
    c.use("typing", "TypedDict")
    body: list[str] = []
    for _ in range(rng.randint(2, 6)):
        members = rng.sample(NOUNS, rng.randint(3, 12))
        body.append(f"class {camel(c.noun())}{rng.choice(['Kind', 'State', 'Status', 'Mode'])}(enum.StrEnum):")
        body += [f'    {m.upper()} = "{m}"' for m in members] + ["", ""]
    for _ in range(rng.randint(1, 4)):
        fields = rng.sample(NOUNS, rng.randint(2, 7))
        body.append(f"class {camel(c.noun())}Dict(TypedDict, total=False):")
        body += [f"    {f}: {rng.choice(['str', 'int', 'list[str]'])}" for f in fields] + ["", ""]
        body.append(f"class {camel(c.noun())}Tuple(NamedTuple):")
        body += [f"    {f}: {rng.choice(['str', 'int', 'float'])}" for f in fields] + ["", ""]
    body += [f"class {camel(c.noun())}Sink(Protocol):", "    def write(self, data: bytes) -> int: ...", "",
             "    def flush(self) -> None: ...", "", ""]
    for _ in range(rng.randint(1, 6)):
        body += c.function() + [""]
    return finish(c, doc, body)


def module_business(rng: random.Random, doc: str) -> str:
    c = Code(rng)
    c.use("decimal", "Decimal")
    c.use("decimal", "ROUND_HALF_UP")
    c.use("logging")
    body = [f"{c.noun().upper()}_RATES: dict[str, Decimal] = {{"]
    for _ in range(rng.randint(4, 14)):
        body.append(f'    "{rng.choice(NOUNS)}_{rng.randint(1, 99)}": Decimal("{rng.random():.4f}"),')
    body += ["}", "", ""]
    for _ in range(rng.randint(3, 10)):
        n = c.noun()
        tiers = sorted(rng.sample(range(10, 10000, 10), 4))
        body += [f"def compute_{n}_{c.noun()}(amount: Decimal, region: str, *, tier: str = \"basic\") -> Decimal:",
                 f"    if amount < 0:", f'        raise ValueError(f"negative {n} amount: {{amount}}")',
                 f"    if amount < {tiers[0]}:", f'        rate = Decimal("{rng.random():.3f}")',
                 f"    elif amount < {tiers[1]}:", f'        rate = Decimal("{rng.random():.3f}")',
                 f"    elif amount < {tiers[2]}:", f'        rate = Decimal("{rng.random():.3f}")',
                 "    else:", f'        rate = Decimal("{rng.random():.3f}")',
                 f'    if tier == "{rng.choice(["gold", "pro", "enterprise"])}":',
                 f'        rate *= Decimal("0.{rng.randint(5, 9)}")',
                 f'    adjusted = (amount * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)',
                 f'    logger.debug("{n} for %s in %s: %s", amount, region, adjusted)',
                 "    return adjusted", "", ""]
    for _ in range(rng.randint(2, 8)):
        body += c.function() + [""]
    return finish(c, doc, body, logger=True)


TOKEN_PATTERNS = ["[a-z]+", "[0-9]+", "[A-Z][a-z]*", ":", ";", "[-+*/]", "\\s+"]
NON_DB_KINDS = [module_utils, module_dataclasses, module_class_heavy, module_parsing,
                module_async, module_decorators, module_enums, module_business]
NON_DB_WEIGHTS = [22, 14, 22, 8, 8, 6, 8, 12]


def finish(c: Code, doc: str, body: list[str], logger: bool = False, extra: list[str] | None = None) -> str:
    if logger:
        c.use("logging")
    head = c.header(doc, extra)
    if logger:
        head += ["logger = logging.getLogger(__name__)", ""]
    lines = head + [""] + body
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# database modules
# ---------------------------------------------------------------------------


class Misuse:
    """Decides deterministically which session-using functions misuse sessions."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng = rng
        self.rate = rate
        self.count: dict[str, int] = {}

    def pick(self, kinds: list[str]) -> str | None:
        if self.rng.random() >= self.rate:
            return None
        k = self.rng.choice(kinds)
        self.count[k] = self.count.get(k, 0) + 1
        return k


def module_db(rng: random.Random, svc: str, mysql_without_recycle: bool, never_removed: bool) -> str:
    env = svc.upper()
    if mysql_without_recycle:
        url = f'os.environ.get("{env}_DATABASE_URL", "mysql+pymysql://app:app@localhost:3306/{svc}")'
        eng = f"engine = create_engine(\n    DATABASE_URL,\n    pool_pre_ping=True,\n    pool_size={rng.randint(5, 20)},\n)"
    else:
        url = f'os.environ.get("{env}_DATABASE_URL", "postgresql+psycopg://app:app@localhost:5432/{svc}")'
        eng = (f"engine = create_engine(\n    DATABASE_URL,\n    pool_pre_ping=True,\n    pool_size={rng.randint(5, 20)},\n"
               f"    max_overflow={rng.randint(5, 30)},\n    pool_recycle={rng.choice([900, 1800, 3600])},\n)")
    remove = "" if never_removed else (
        "\n\ndef shutdown_session(exception: BaseException | None = None) -> None:\n"
        '    """Teardown hook: give the scoped session\'s connection back."""\n'
        "    db_session.remove()\n"
    )
    return f'''"""Database wiring for the {svc} service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker

DATABASE_URL = {url}

{eng}
SessionLocal = sessionmaker(bind=engine, autoflush=False, expire_on_commit=False)
db_session = scoped_session(SessionLocal)


class Base(DeclarativeBase):
    pass


def get_session() -> Iterator[Session]:
    """Request-scoped dependency: one session per request, always closed."""
    session = SessionLocal()
    try:
        yield session
    finally:
        session.close()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A transactional scope around a series of operations."""
    session = SessionLocal()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
{remove}'''


def model_defs(rng: random.Random, names: list[str], base: str = "Base") -> list[str]:
    out: list[str] = []
    for i, name in enumerate(names):
        cls = camel(name)
        out += [f"class {cls}({base}):", f'    __tablename__ = "{name}s"', "",
                "    id: Mapped[int] = mapped_column(primary_key=True)"]
        for col in rng.sample(NOUNS, rng.randint(3, 10)):
            t = rng.choice([("str", "String(120)"), ("int", "Integer"), ("bool", "Boolean"),
                            ("datetime.datetime", "DateTime(timezone=True)"), ("str | None", "Text"),
                            ("decimal.Decimal", "Numeric(12, 2)")])
            extra = ", index=True" if rng.random() < 0.2 else ""
            nullable = ", nullable=True" if "None" in t[0] else ""
            out.append(f"    {col}: Mapped[{t[0]}] = mapped_column({t[1]}{extra}{nullable})")
        if i > 0 and rng.random() < 0.6:
            parent = names[rng.randrange(i)]
            out += [f'    {parent}_id: Mapped[int] = mapped_column(ForeignKey("{parent}s.id"))',
                    f'    {parent}: Mapped[{camel(parent)}] = relationship(back_populates="{name}s")']
            # back-reference on the parent is not emitted: keep models simple
            out[-1] = f"    {parent}: Mapped[{camel(parent)}] = relationship()"
        out += ["", "    def __repr__(self) -> str:", f'        return f"<{cls} {{self.id}}>"', "", ""]
    return out


def module_models(rng: random.Random, svc: str, domain: str) -> tuple[str, list[str]]:
    names = [f"{domain[:-1] if domain.endswith('s') else domain}_{n}" for n in rng.sample(NOUNS, rng.randint(2, 6))]
    body = ["import datetime", "import decimal", "",
            "from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, Numeric, String, Text",
            "from sqlalchemy.orm import Mapped, mapped_column, relationship", "",
            f"from {svc}.db import Base", "", ""] + model_defs(rng, names)
    text = f'"""{domain} models."""\n\nfrom __future__ import annotations\n\n' + "\n".join(body).rstrip() + "\n"
    return text, [camel(n) for n in names]


def module_repository(rng: random.Random, domain: str, models: list[str]) -> str:
    out = [f'"""Data access for {domain}."""', "", "from __future__ import annotations", "",
           "from collections.abc import Sequence", "",
           "from sqlalchemy import delete, func, select, update", "from sqlalchemy.orm import Session", "",
           f"from .models import {', '.join(models)}", "", ""]
    for m in models:
        out += [f"class {m}Repository:", "    def __init__(self, session: Session) -> None:",
                "        self.session = session", "",
                f"    def get(self, obj_id: int) -> {m} | None:", f"        return self.session.get({m}, obj_id)", "",
                f"    def list_page(self, *, offset: int = 0, limit: int = 50) -> Sequence[{m}]:",
                f"        stmt = select({m}).order_by({m}.id).offset(offset).limit(limit)",
                "        return self.session.execute(stmt).scalars().all()", "",
                "    def count(self) -> int:",
                f"        return self.session.execute(select(func.count()).select_from({m})).scalar_one()", "",
                f"    def add(self, obj: {m}) -> {m}:", "        self.session.add(obj)",
                "        self.session.flush()", "        return obj", "",
                "    def delete_ids(self, ids: list[int]) -> int:",
                f"        result = self.session.execute(delete({m}).where({m}.id.in_(ids)))",
                "        return result.rowcount", "",
                "    def touch(self, obj_id: int) -> None:",
                f"        self.session.execute(update({m}).where({m}.id == obj_id).values(id={m}.id))", "", ""]
    return "\n".join(out).rstrip() + "\n"


def db_function(rng: random.Random, svc: str, models: list[str], misuse: str | None, n: int, *,
                in_view: bool = False) -> list[str]:
    """One function using sessions, well (most) or badly (misuse)."""
    m = rng.choice(models)
    v = m.lower()
    name = f"{rng.choice(VERBS)}_{v}_{rng.choice(NOUNS)}_{n}"
    if misuse == "unclosed":
        return [f"def {name}(obj_id: int) -> {m} | None:", "    session = SessionLocal()",
                f"    obj = session.get({m}, obj_id)", "    if obj is None:", "        return None",
                "    session.close()", "    return obj", "", ""]
    if misuse == "close_not_finally":
        return [f"def {name}(obj_id: int) -> int:", "    session = SessionLocal()",
                f"    obj = session.get({m}, obj_id)", "    result = obj.id if obj is not None else -1",
                "    session.close()", "    return result", "", ""]
    if misuse == "no_rollback":
        return [f"def {name}(rows: list[dict]) -> int:", "    saved = 0", "    with SessionLocal() as session:",
                "        for row in rows:", "            try:", f"                session.add({m}(**row))",
                "                session.commit()", "                saved += 1", "            except IntegrityError:",
                '                logger.warning("duplicate row %r", row)', "    return saved", "", ""]
    if misuse == "engine_per_call":
        return [f"def {name}(url: str) -> list:", "    engine = create_engine(url)",
                "    with engine.connect() as conn:",
                f'        return list(conn.execute(text("SELECT id FROM {v}s LIMIT 100")))', "", ""]
    if misuse == "mysql_engine":
        return [f"def {name}() -> list:", "    reporting_engine = create_engine(",
                f'        "mysql+pymysql://report:report@reports-db:3306/{svc}", pool_size=5', "    )",
                f"    {svc.upper()}_ENGINES.append(reporting_engine)",
                "    with reporting_engine.connect() as conn:",
                '        return list(conn.execute(text("SELECT 1")))', "", ""]
    if misuse == "uncommitted":
        return [f"def {name}(payload: dict) -> None:", "    with SessionLocal() as session:",
                f"        session.add({m}(**payload))", "", ""]
    if misuse == "conn_leak":
        return [f"def {name}() -> list:", "    conn = engine.connect()",
                f'    rows = conn.execute(text("SELECT count(*) FROM {v}s")).all()', "    return rows", "", ""]
    good = rng.randrange(7 if not in_view else 5)
    if good == 0:
        return [f"def {name}(payload: dict) -> int:", "    with SessionLocal() as session:",
                "        with session.begin():", f"            obj = {m}(**payload)", "            session.add(obj)",
                "        return obj.id", "", ""]
    if good == 1:
        return [f"def {name}(limit: int = 50) -> list[int]:", "    session = SessionLocal()", "    try:",
                f"        repo = {m}Repository(session)", "        return [o.id for o in repo.list_page(limit=limit)]",
                "    finally:", "        session.close()", "", ""]
    if good == 2:
        return [f"def {name}(obj_id: int, **changes: object) -> None:", "    with session_scope() as session:",
                f"        obj = session.get({m}, obj_id)", "        if obj is None:",
                f'            raise LookupError(f"no {v} {{obj_id}}")', "        for key, value in changes.items():",
                "            setattr(obj, key, value)", "", ""]
    if good == 3:
        return [f"def {name}(obj_id: int) -> dict:", f"    obj = db_session.get({m}, obj_id)",
                "    if obj is None:", '        return {"status": 404}',
                '    return {"status": 200, "id": obj.id, "repr": repr(obj)}', "", ""]
    if good == 4:
        return [f"def {name}(ids: list[int]) -> int:", "    with SessionLocal() as session:",
                f"        repo = {m}Repository(session)", "        try:", "            removed = repo.delete_ids(ids)",
                "            session.commit()", "        except Exception:", "            session.rollback()",
                "            raise", "        return removed", "", ""]
    if good == 5:
        return [f"def {name}(status: str) -> list[int]:", "    with SessionLocal() as session:",
                f"        stmt = select({m}.id).where({m}.id > 0).limit(100)",
                "        return list(session.execute(stmt).scalars())", "", ""]
    return [f"def {name}() -> int:", "    with engine.connect() as conn:",
            f'        return conn.execute(text("SELECT count(*) FROM {v}s")).scalar_one()', "", ""]


def module_service(rng: random.Random, svc: str, domain: str, models: list[str], misuse: Misuse) -> str:
    c = Code(rng)
    c.use("logging")
    body: list[str] = []
    kinds = ["unclosed", "close_not_finally", "no_rollback", "engine_per_call", "uncommitted", "conn_leak", "mysql_engine"]
    for i in range(rng.randint(6, 16)):
        body += db_function(rng, svc, models, misuse.pick(kinds), i)
        if rng.random() < 0.4:
            body += c.function() + [""]
    head = [f'"""{domain} service layer."""', "", "from __future__ import annotations", ""]
    head += sorted(f"import {m}" for m in c.imports)
    head += [f"from {m} import {', '.join(sorted(n))}" for m, n in sorted(c.from_imports.items())]
    head += ["", "from sqlalchemy import create_engine, select, text", "from sqlalchemy.exc import IntegrityError", "",
             f"from {svc}.db import SessionLocal, db_session, engine, session_scope",
             f"from .models import {', '.join(models)}",
             f"from .repository import {', '.join(m + 'Repository' for m in models)}", "",
             "logger = logging.getLogger(__name__)",
             f"{svc.upper()}_ENGINES: list = []", "", ""]
    return "\n".join(head + body).rstrip() + "\n"


def module_queries(rng: random.Random, domain: str, models: list[str]) -> str:
    out = [f'"""Reporting queries for {domain}."""', "", "from __future__ import annotations", "",
           "from sqlalchemy import and_, func, or_, select", "from sqlalchemy.orm import Session", "",
           f"from .models import {', '.join(models)}", "", ""]
    for m in models:
        for _ in range(rng.randint(1, 4)):
            n = rng.choice(NOUNS)
            key = "limit_key" if n == "limit" else n  # ``limit`` is the keyword below
            out += [f"def {m.lower()}_by_{n}(session: Session, {key}: object, *, limit: int = 100) -> list:",
                    f"    stmt = (", f"        select({m})",
                    f"        .where(or_({m}.id == {key}, and_({m}.id > 0, {m}.id < {rng.randint(100, 10000)})))",
                    f"        .order_by({m}.id.desc())", "        .limit(limit)", "    )",
                    "    return list(session.execute(stmt).scalars())", "", "",
                    f"def count_{m.lower()}_{n}(session: Session) -> int:",
                    f"    return session.execute(select(func.count({m}.id))).scalar_one()", "", ""]
    return "\n".join(out).rstrip() + "\n"


def module_views(rng: random.Random, svc: str, domain: str, models: list[str], misuse: Misuse) -> str:
    """Uses the project's factories from db.py; does not import sqlalchemy."""
    c = Code(rng)
    c.use("logging")
    c.use("typing", "Any")
    body: list[str] = []
    for i in range(rng.randint(4, 12)):
        body += db_function(rng, svc, models, misuse.pick(["unclosed", "close_not_finally", "uncommitted"]), i,
                            in_view=True)
        if rng.random() < 0.5:
            body += c.function() + [""]
    body += ["def register(app: Any) -> None:",
             f'    app.add_url_rule("/{domain}", view_func=lambda: {{"ok": True}})']
    if rng.random() < 0.5:
        body += ["    app.teardown_appcontext(lambda exc: db_session.remove())"]
    head = [f'"""HTTP views for {domain}."""', "", "from __future__ import annotations", ""]
    head += sorted(f"import {m}" for m in c.imports)
    head += [f"from {m} import {', '.join(sorted(n))}" for m, n in sorted(c.from_imports.items())]
    head += ["", f"from {svc}.db import SessionLocal, db_session, session_scope",
             f"from .models import {', '.join(models)}",
             f"from .repository import {', '.join(m + 'Repository' for m in models)}", "",
             "logger = logging.getLogger(__name__)", "", ""]
    return "\n".join(head + body).rstrip() + "\n"


def module_tasks(rng: random.Random, svc: str, domain: str, models: list[str]) -> str:
    out = [f'"""Background tasks for {domain}."""', "", "from __future__ import annotations", "",
           "import logging", "", "from acme_common.decorators import retry, task", "",
           f"from {svc}.db import db_session, session_scope", f"from .models import {', '.join(models)}", "",
           "logger = logging.getLogger(__name__)", "", ""]
    for i in range(rng.randint(3, 9)):
        m = rng.choice(models)
        n = rng.choice(NOUNS)
        if rng.random() < 0.5:
            out += [f"@task(queue=\"{domain}\", retries={rng.randint(1, 5)})", f"def sync_{m.lower()}_{n}_{i}(obj_id: int) -> None:",
                    "    with session_scope() as session:", f"        obj = session.get({m}, obj_id)",
                    "        if obj is None:", '            logger.info("gone: %s", obj_id)', "            return",
                    f'        logger.info("synced %r", obj)', "", ""]
        else:
            out += [f"@task(queue=\"{domain}\")", "@retry(times=3)", f"def refresh_{m.lower()}_{n}_{i}(ids: list[int]) -> int:",
                    "    try:", f"        rows = [db_session.get({m}, i) for i in ids]",
                    "        db_session.commit()", "        return sum(1 for r in rows if r is not None)",
                    "    finally:", "        db_session.remove()", "", ""]
    return "\n".join(out).rstrip() + "\n"


def module_migration(rng: random.Random, rev: str, down: str | None, tables: list[str]) -> str:
    out = [f'"""auto-generated migration {rev}."""', "", "import sqlalchemy as sa", "from alembic import op", "",
           f'revision = "{rev}"', f"down_revision = {down!r}", "", "", "def upgrade() -> None:"]
    for t in tables:
        out.append(f'    op.create_table(\n        "{t}",\n        sa.Column("id", sa.Integer(), primary_key=True),')
        for col in rng.sample(NOUNS, rng.randint(2, 8)):
            out.append(f'        sa.Column("{col}", sa.{rng.choice(["String(120)", "Integer()", "Boolean()", "Text()"])}, nullable={rng.random() < 0.5}),')
        out.append("    )")
        out.append(f'    op.create_index("ix_{t}_id", "{t}", ["id"])')
    out += ["", "", "def downgrade() -> None:"] + [f'    op.drop_table("{t}")' for t in reversed(tables)]
    return "\n".join(out) + "\n"


def module_test(rng: random.Random, svc: str, domain: str, models: list[str]) -> str:
    c = Code(rng)
    out = [f'"""Tests for {svc}.{domain}."""', "", "from __future__ import annotations", "", "import pytest", "",
           f"from {svc}.{domain}.models import {', '.join(models)}", "", ""]
    for i in range(rng.randint(4, 14)):
        m = rng.choice(models)
        if rng.random() < 0.5:
            out += [f"def test_{m.lower()}_roundtrip_{i}(db) -> None:", f"    obj = {m}()", "    db.add(obj)",
                    "    db.flush()", f"    assert db.get({m}, obj.id) is obj", "", ""]
        else:
            p = rng.randint(2, 6)
            out += [f"@pytest.mark.parametrize(\"value\", {list(range(p))})",
                    f"def test_{c.noun()}_{i}(value: int) -> None:",
                    f"    assert value * {rng.randint(1, 9)} >= 0", f'    assert f"{{value}}" == str(value)', "", ""]
    return "\n".join(out).rstrip() + "\n"


HEALTHCHECK = '''"""Liveness and readiness probes for {svc}."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from {svc}.db import engine


def database_ready(timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except OperationalError:
            time.sleep(0.1)
    return False
'''

SA_TYPES = '''"""Column types shared by every service."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.types import String, Text, TypeDecorator


class JSONText(TypeDecorator[Any]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


class LowerString(TypeDecorator[str]):
    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return value.lower() if value is not None else None
'''

CONFTEST = '''"""Shared fixtures: an in-memory SQLite engine per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker


@pytest.fixture(scope="session")
def engine():
    eng = create_engine("sqlite://")
    yield eng
    eng.dispose()


@pytest.fixture
def db(engine) -> Iterator[Session]:
    connection = engine.connect()
    transaction = connection.begin()
    session = sessionmaker(bind=connection)()
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()
'''


# ---------------------------------------------------------------------------
# huge generated files
# ---------------------------------------------------------------------------


def huge_protobuf(rng: random.Random, target_lines: int) -> str:
    out = ['"""Generated by the protocol buffer compiler.  DO NOT EDIT!"""', "# source: acme/events.proto", "",
           "from __future__ import annotations", "", "import struct", "from typing import Any, ClassVar", "", "",
           "class _Message:", "    __slots__: ClassVar[tuple[str, ...]] = ()",
           "    FIELDS: ClassVar[dict[int, tuple[str, str]]] = {}", "",
           "    def __init__(self, **kwargs: Any) -> None:", "        for name, value in kwargs.items():",
           "            setattr(self, name, value)", "",
           "    def __eq__(self, other: object) -> bool:",
           "        return type(other) is type(self) and all(",
           "            getattr(self, n, None) == getattr(other, n, None) for n in self.__slots__", "        )", "", ""]
    i = 0
    while len(out) < target_lines:
        i += 1
        name = camel(rng.choice(NOUNS), rng.choice(NOUNS)) + f"V{i}"
        fields = rng.sample(NOUNS, rng.randint(3, 10))
        out.append(f"class {name}(_Message):")
        out.append(f"    __slots__ = ({', '.join(repr(f) for f in fields)},)")
        out.append("    FIELDS = {")
        for j, f in enumerate(fields, 1):
            out.append(f"        {j}: ({f!r}, {rng.choice(['int64', 'string', 'bool', 'double', 'bytes'])!r}),")
        out.append("    }")
        out.append("")
        for j, f in enumerate(fields, 1):
            out += [f"    def Has{camel(f)}(self) -> bool:", f"        return getattr(self, {f!r}, None) is not None", ""]
        out += ["    def SerializeToString(self) -> bytes:", "        parts: list[bytes] = []"]
        for j, f in enumerate(fields, 1):
            out += [f"        if self.Has{camel(f)}():",
                    f"            parts.append(struct.pack('<B', {j}) + repr(self.{f}).encode())"]
        out += ["        return b''.join(parts)", "", "    def Clear(self) -> None:"]
        out += [f"        self.{f} = None" for f in fields] + ["", ""]
    out.append(f"DESCRIPTOR_POOL = [{', '.join(repr(n) for n in ['acme.events'] * 3)}]")
    return "\n".join(out) + "\n"


def huge_models(rng: random.Random, target_lines: int) -> str:
    out = ['"""Generated from the legacy warehouse schema by sqlacodegen.  Do not edit by hand."""', "",
           "from __future__ import annotations", "", "import datetime", "import decimal", "",
           "from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, Numeric, String, Text",
           "from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship", "", "",
           "class LegacyBase(DeclarativeBase):", "    pass", "", ""]
    names: list[str] = []
    i = 0
    while len(out) < target_lines:
        batch = [f"legacy_{rng.choice(NOUNS)}_{i + k}" for k in range(10)]
        i += 10
        out += model_defs(rng, batch, base="LegacyBase")
        names += batch
    return "\n".join(out).rstrip() + "\n"


def huge_table(rng: random.Random, target_lines: int) -> str:
    out = ['"""Generated lookup tables (ISO-like codes, tariffs, unit conversions). DO NOT EDIT."""', "",
           "from __future__ import annotations", "", "import enum", "", ""]
    out += ["class Unit(enum.IntEnum):"] + [f"    U{k} = {k}" for k in range(200)] + ["", ""]
    out.append("TARIFF_TABLE: dict[str, tuple[str, float, int, bool]] = {")
    n = 0
    while len(out) < target_lines * 0.6:
        n += 1
        out.append(f'    "{rng.choice(NOUNS)[:3].upper()}{n:05d}": ("{rng.choice(NOUNS)} {rng.choice(NOUNS)}", '
                   f"{rng.random() * 100:.4f}, {rng.randint(0, 9999)}, {rng.random() < 0.5}),")
    out += ["}", "", "", "CONVERSIONS = ["]
    while len(out) < target_lines - 5:
        out.append(f"    ({rng.randint(0, 199)}, {rng.randint(0, 199)}, {rng.random() * 1000:.6f}),")
    out += ["]", "", "", "def lookup(code: str) -> tuple[str, float, int, bool] | None:",
            "    return TARIFF_TABLE.get(code)"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# the tree
# ---------------------------------------------------------------------------


PYPROJECT = """[project]
name = "acme-platform"
version = "0.0.0"
requires-python = ">=3.11"

[tool.sessionlint]

[tool.ruff]
"""

FLAKE8 = "[flake8]\n"

GITIGNORE = """__pycache__/
*.py[cod]
.venv/
build/
dist/
*.egg-info/
.sessionlint_cache/
.ruff_cache/
.mypy_cache/
scratch/
"""


def generate(root: Path, seed: int, scale: float = 1.0) -> dict[str, object]:
    rng = random.Random(seed)
    files: dict[str, str] = {}
    misuse = Misuse(random.Random(seed + 1), rate=0.035)

    # shared libraries: no database
    for lib in LIBS:
        files[f"{lib}/__init__.py"] = f'"""{lib}: shared helpers."""\n'
        for sub in range(int(rng.randint(5, 7) * scale)):
            subpkg = f"{lib}/{rng.choice(NOUNS)}{sub}"
            files[f"{subpkg}/__init__.py"] = ""
            for k in range(rng.randint(8, 14)):
                kind = rng.choices(NON_DB_KINDS, NON_DB_WEIGHTS)[0]
                files[f"{subpkg}/{rng.choice(VERBS)}_{rng.choice(NOUNS)}_{k}.py"] = kind(rng, f"{lib} {kind.__name__[7:]}")
    files["acme_common/sqla_types.py"] = SA_TYPES
    files["acme_common/decorators.py"] = module_decorators(random.Random(seed + 7), "Shared decorators.")

    # services
    domain_pool = list(DOMAINS)
    touch_candidates: list[str] = []
    for si, svc in enumerate(SERVICES):
        files[f"{svc}/__init__.py"] = f'"""The {svc} service."""\n'
        files[f"{svc}/healthcheck.py"] = HEALTHCHECK.format(svc=svc)
        files[f"{svc}/db.py"] = module_db(rng, svc, mysql_without_recycle=(si == 3), never_removed=(si == 5))
        ndomains = max(2, int(rng.randint(10, 13) * scale))
        tables: list[str] = []
        for d in range(ndomains):
            domain = f"{rng.choice(domain_pool)}{d}"
            pkg = f"{svc}/{domain}"
            files[f"{pkg}/__init__.py"] = ""
            text, models = module_models(rng, svc, domain)
            files[f"{pkg}/models.py"] = text
            tables += [m.lower() + "s" for m in models]
            files[f"{pkg}/repository.py"] = module_repository(rng, domain, models)
            files[f"{pkg}/service.py"] = module_service(rng, svc, domain, models, misuse)
            if rng.random() < 0.75:
                files[f"{pkg}/queries.py"] = module_queries(rng, domain, models)
            files[f"{pkg}/views.py"] = module_views(rng, svc, domain, models, misuse)
            touch_candidates.append(f"{pkg}/views.py")
            if rng.random() < 0.6:
                files[f"{pkg}/tasks.py"] = module_tasks(rng, svc, domain, models)
            others = ["schemas", "logic", "utils", "serializers", "validators", "constants", "exceptions",
                      "clients", "formatting", "parsing", "events", "handlers", "rules", "pricing", "helpers",
                      "mappers", "policies", "builders"]
            for other in rng.sample(others, rng.randint(8, 12)):
                kind = rng.choices(NON_DB_KINDS, NON_DB_WEIGHTS)[0]
                files[f"{pkg}/{other}.py"] = kind(rng, f"{svc}.{domain} {other}")
            files[f"tests/{svc}/test_{domain}.py"] = module_test(rng, svc, domain, models)
            files[f"tests/{svc}/test_{domain}_logic.py"] = module_test(rng, svc, domain, models)
        files[f"tests/{svc}/__init__.py"] = ""
        files[f"tests/{svc}/conftest.py"] = CONFTEST
        # migrations
        down = None
        rng.shuffle(tables)
        for k in range(0, len(tables), 3):
            rev = f"{rng.getrandbits(48):012x}"
            files[f"{svc}/migrations/versions/{rev}_{k // 3:04d}.py"] = module_migration(rng, rev, down, tables[k:k + 3])
            down = rev
        files[f"{svc}/migrations/__init__.py"] = ""
        files[f"{svc}/migrations/versions/__init__.py"] = ""
    files["tests/__init__.py"] = ""

    # huge generated files
    files["acme_events/generated/__init__.py"] = ""
    files["acme_events/generated/events_pb2.py"] = huge_protobuf(random.Random(seed + 2), int(30000 * scale))
    files["reporting/legacy/__init__.py"] = ""
    files["reporting/legacy/models_gen.py"] = huge_models(random.Random(seed + 3), int(30000 * scale))
    files["acme_common/tables.py"] = huge_table(random.Random(seed + 4), int(15000 * scale))

    # ignored by .gitignore: a tool honouring it skips these
    files["scratch/__init__.py"] = ""
    files["scratch/notebook_dump.py"] = module_utils(random.Random(seed + 5), "scratch, git-ignored")

    # validate and write
    if root.exists():
        if (root / MARKER).exists() or not any(root.iterdir()):
            shutil.rmtree(root)
        else:
            sys.exit(f"{root} exists and is not a corpus made by this script; refusing to replace it")
    root.mkdir(parents=True)
    total_lines = 0
    sqla_files = 0
    for rel, text in sorted(files.items()):
        try:
            compile(text, rel, "exec", dont_inherit=True)  # the grammar and what the compiler checks
        except SyntaxError as exc:  # a generator bug: fail loudly
            raise SystemExit(f"generated invalid Python in {rel}: {exc}\n") from exc
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not rel.startswith("scratch/"):
            total_lines += text.count("\n")
            if "import sqlalchemy" in text or "from sqlalchemy" in text:
                sqla_files += 1
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / ".flake8").write_text(FLAKE8)
    (root / ".gitignore").write_text(GITIGNORE)
    git = shutil.which("git")
    if git:
        subprocess.run([git, "init", "-q", str(root)], check=False)
    py_files = sum(1 for rel in files if not rel.startswith("scratch/"))
    huge = {rel: files[rel].count("\n") for rel in files if files[rel].count("\n") >= 10000}
    stats: dict[str, object] = {
        "seed": seed,
        "scale": scale,
        "python_files": py_files,
        "lines": total_lines,
        "files_importing_sqlalchemy": sqla_files,
        "share_importing_sqlalchemy": round(sqla_files / py_files, 3),
        "huge_files": huge,
        "test_files": sum(1 for rel in files if rel.startswith("tests/")),
        "gitignored_files": sum(1 for rel in files if rel.startswith("scratch/")),
        "misuse_functions": misuse.count,
        "touch_file": touch_candidates[len(touch_candidates) // 2],
    }
    (root / MARKER).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", default=DEFAULT_DIR, help=f"output directory (default {DEFAULT_DIR})")
    ap.add_argument("--seed", type=int, default=20261121)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the amount of code (default 1.0)")
    args = ap.parse_args(argv)
    stats = generate(Path(args.dir), args.seed, args.scale)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
