"""Repair the syntax errors in tensorrt-stubs 10.13 so that mypy can read them.

Each fix is local to one ``def`` line: ``in`` (a keyword) as a parameter name becomes
``in_``, and a parameter without a default that follows defaulted ones gets ``= ...``.
Idempotent; prints what it changed.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path


def stub_file() -> Path:
    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("tensorrt-stubs is not installed (no tensorrt_bindings package)")
    return Path(next(iter(spec.submodule_search_locations))) / "tensorrt.pyi"


def fix_line(line: str) -> str:
    line = re.sub(r"([(,] *)in: ", r"\1in_: ", line)
    m = re.match(r"^(\s*def \w+\()(.*)(\) -> .*:\s*)$", line)
    if not m:
        return line
    params, depth, cur = [], 0, ""
    for ch in m.group(2):
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            params.append(cur)
            cur = ""
        else:
            cur += ch
    params.append(cur)
    seen_default = False
    for i, p in enumerate(params):
        if "=" in p:
            seen_default = True
        elif seen_default and p.strip() and not p.strip().startswith("*"):
            params[i] = p + " = ..."
    return m.group(1) + ",".join(params) + m.group(3)


def main() -> None:
    path = stub_file()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    changed = 0
    for _ in range(200):
        try:
            ast.parse("".join(lines))
            break
        except SyntaxError as exc:
            n = (exc.lineno or 1) - 1
            fixed = fix_line(lines[n].rstrip("\n")) + "\n"
            if fixed == lines[n]:
                sys.exit(f"{path}:{n + 1}: cannot repair: {lines[n].strip()}")
            lines[n] = fixed
            changed += 1
    path.write_text("".join(lines), encoding="utf-8")
    print(f"{path}: {changed} line(s) repaired")


if __name__ == "__main__":
    main()
