#!/usr/bin/env python3
"""The shape the workspace keeps; fails, naming what is off, when:

- a module of a crate imports a module that imports it back (directly or
  through others);
- the environment is read outside `functions/core/src/config.rs` and the CLI's
  argument parsing (`std::env::var`, `config::var`);
- a function outside tests is longer than 60 lines;
- a variable config.rs reads, or template.yaml sets, is missing from config.rs's table.

Imports:

A module is a source file (`a/b.rs` or `a/b/mod.rs` is `a::b`). A module imports
another when it names it through `crate::`, `super::` or `self::` paths, in a `use`
or inline; a path to an item counts as an import of the module that holds it. The
`#[cfg(test)]` module at the end of a file is left out: tests may reach up a layer.
A module's `mod child;` declaration is not an import; `pub use child::X` is.

    scripts/layering.py [crate_src_dir ...]   (default: every crate's src/)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["functions/engine", "functions/core", "functions/lambda", "functions/api",
          "functions/events", "functions/step", "cli", "bench", "tests"]

PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+|::\{)")


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


TOKENS = re.compile(
    r'//[^\n]*|/\*.*?\*/|\br(#*)".*?"\1|"(?:\\[\s\S]|[^"\\])*"|\'(?:\\.|[^\'\\\n])\'',
    flags=re.S,
)


def strip(text: str) -> str:
    """The code without comments, and every string or character literal empty; lines stay where they were."""
    text = TOKENS.sub(lambda m: ('' if m.group(0).startswith('/') else "''") + "\n" * m.group(0).count("\n"), text)
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod \w+\s*\{", text, flags=re.M)
    return text[: cut.start()] if cut else text


def expand(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`."""
    tree = tree.strip()
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                head, inner = tree[:start], tree[start + 1 : i]
                parts, level, last = [], 0, 0
                for j, c in enumerate(inner):
                    level += c == "{"
                    level -= c == "}"
                    if c == "," and level == 0:
                        parts.append(inner[last:j])
                        last = j + 1
                parts.append(inner[last:])
                return [head + leaf for part in parts if part.strip() for leaf in expand(part)]
    return [tree]


def paths(text: str) -> list[str]:
    found = []
    for use in re.finditer(r"\buse\s+([^;]+);", text):
        found += [p.split(" as ")[0].strip() for p in expand(use.group(1))]
    rest = re.sub(r"\buse\s+[^;]+;", "", text)
    found += [m.group(0) for m in PATH.finditer(rest) if not m.group(0).endswith("{")]
    return [re.sub(r"\s+", "", p) for p in found]


def resolve(path: str, here: tuple[str, ...], is_dir_module: bool, modules: set) -> tuple | None:
    parts = path.split("::")
    head, rest = parts[0], parts[1:]
    if head == "crate":
        base = ()
    elif head == "self":
        base = here
    elif head == "super":
        base = here if not is_dir_module else here
        base = base[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    else:
        return None
    best = None
    for n in range(len(rest) + 1):
        candidate = base + tuple(rest[:n])
        if candidate in modules:
            best = candidate
    return best


def crate_graph(src: Path) -> dict:
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    modules = set(files)
    graph = {m: set() for m in modules}
    for module, file in files.items():
        is_dir = file.name in ("mod.rs", "lib.rs", "main.rs")
        for path in paths(strip(file.read_text())):
            if path.startswith("self::") and not is_dir:
                path = "self"  # an item of this file
            target = resolve(path, module, is_dir, modules)
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict) -> list[list]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def name(module: tuple) -> str:
    return "::".join(("crate",) + module)


MAX_LINES = 60
ENV_READERS = {"functions/core/src/config.rs"}
ENV = re.compile(r"std::env::(var|vars|var_os)\b|\benv::var\(|config::var\(")


def env_reads(src: Path) -> list[str]:
    found = []
    for file in sorted(src.rglob("*.rs")):
        rel = str(file.relative_to(ROOT))
        if rel in ENV_READERS:
            continue
        for number, line in enumerate(strip(file.read_text()).splitlines(), 1):
            if ENV.search(line):
                found.append(f"{rel}:{number}: reads the environment (only config.rs may): {line.strip()}")
    return found


FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def long_functions(src: Path) -> list[str]:
    found = []
    for file in sorted(src.rglob("*.rs")):
        lines = strip(file.read_text()).splitlines()
        for start, line in enumerate(lines):
            match = FN.match(line)
            if not match:
                continue
            depth, opened, end = 0, False, None
            for index in range(start, len(lines)):
                text = lines[index]
                if not opened and ";" in text and "{" not in text:
                    break  # a declaration without a body
                for ch in text:
                    if ch == "{":
                        depth, opened = depth + 1, True
                    elif ch == "}":
                        depth -= 1
                if opened and depth == 0:
                    end = index
                    break
            if end is not None and end - start + 1 > MAX_LINES:
                rel = file.relative_to(ROOT)
                found.append(f"{rel}:{start + 1}: fn {match.group(6)} is {end - start + 1} lines (at most {MAX_LINES})")
    return found


CONFIG = ROOT / "functions/core/src/config.rs"


def untabled_variables() -> list[str]:
    """The `DBROLES_*` variables read (or set by the template) that config.rs's table does not name."""
    text = CONFIG.read_text()
    table = set(re.findall(r"`(DBROLES_[A-Z_]+)`", "\n".join(l for l in text.splitlines() if l.startswith("//! |"))))
    read = set(re.findall(r'"(DBROLES_[A-Z_]+)"', text))
    secrets = set(re.findall(r'SecretSource::from_env\("(DBROLES_[A-Z_]+)"\)', text))
    read |= {f"{name}_ARN" for name in secrets}
    set_by_template = set(re.findall(r"^\s+(DBROLES_[A-Z_]+):", (ROOT / "template.yaml").read_text(), flags=re.M))
    mentioned = table | set(re.findall(r"`(DBROLES_[A-Z_]+)`", text))
    problems = [f"config.rs reads {name}, which its table does not list" for name in sorted(read - table - {n + "_ARN" for n in secrets})]
    problems += [f"template.yaml sets {name}, which config.rs does not describe" for name in sorted(set_by_template - mentioned)]
    return problems


def main() -> int:
    dirs = [Path(d).resolve() for d in sys.argv[1:]] or [ROOT / c / "src" for c in CRATES]
    failed = False
    for src in dirs:
        graph = crate_graph(src)
        for component in cycles(graph):
            failed = True
            members = set(component)
            print(f"{src.relative_to(ROOT)}: {len(component)} modules import each other:")
            for m in component:
                back = sorted(name(t) for t in graph[m] if t in members)
                print(f"  {name(m)} -> {', '.join(back)}")
        reads = [] if src.parent.name == "tests" else env_reads(src)  # the test harness reads its own settings
        for problem in reads + long_functions(src):
            failed = True
            print(problem)
    for problem in untabled_variables():
        failed = True
        print(problem)
    if not failed:
        print(f"layering: no import cycle, no stray read of the environment, no function over {MAX_LINES} lines in {len(dirs)} crates, every variable in config.rs's table")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
