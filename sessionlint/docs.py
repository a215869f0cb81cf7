"""Rule documentation rendered from the registry (never edited by hand).

``sessionlint rules --format markdown`` writes ``docs/rules.md``;
``sessionlint rules --format table`` the table README.md embeds between its
``<!-- rules-table -->`` markers. A test keeps both in sync with the registry.
"""

from __future__ import annotations

from sessionlint.registry import CodeInfo, all_codes

_KIND_TITLES = {"input": "Input errors", "static": "Static rules", "runtime": "Runtime guard findings"}


def _summary(info: CodeInfo) -> str:
    return info.summary.replace("|", "\\|")


def rules_table() -> str:
    lines = ["| code | name | kind | finds |", "|---|---|---|---|"]
    for info in all_codes().values():
        lines.append(f"| [{info.code}](docs/rules.md#{info.code.lower()}) | `{info.name}` | {info.kind} | {_summary(info)} |")
    return "\n".join(lines) + "\n"


def rules_markdown() -> str:
    out = [
        "# sessionlint rules\n",
        "Generated from the registry by `sessionlint rules --format markdown`; do not edit.\n",
    ]
    kind = None
    for info in all_codes().values():
        if info.kind != kind:
            kind = info.kind
            out.append(f"\n## {_KIND_TITLES.get(kind, kind)}\n")
        body = info.doc.replace("\n## ", "\n#### ")
        if body.startswith("## "):
            body = "#### " + body[3:]
        out.append(f'\n<a id="{info.code.lower()}"></a>\n### {info.code} `{info.name}`\n\n{body.strip()}\n')
    return "".join(out)
