#!/usr/bin/env python3
"""Fails when two source files of src/ import each other, directly or round
a longer loop. CI runs it (scripts/test.sh): modules named for one concern
each only stay that way while their dependencies point one way.

A file's imports are the crate paths it names: `use` items (braces
expanded) and `crate::a::b` / `super::x` / `self::x` paths in code, plus
bare paths that start with a child module it declares (`mod net; use
net::X`). Each path is resolved to the deepest file that defines a module
on it. Comments and string literals are ignored; a file's own tests count
(a test that needs a module's internals is a dependency too).

Usage: scripts/import-cycles.py [SRC_DIR]   (default: src)
"""

import os
import re
import sys


def module_files(src):
    """Maps a module path tuple (e.g. ("job", "net")) to its file."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            mods[tuple(parts)] = os.path.join(src, rel)
    return mods


def strip(text):
    """Code without comments, string and char literals."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"'(?:\\.|[^'\\])'", "''", text)
    return text


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [tree.split(" as ")[0]]
    head, body = tree[:i], tree[i + 1 : tree.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it:
            out += expand(head + it)
    return out


def inline_depths(code):
    """For each offset of `code`, how many inline modules (`mod x { .. }`,
    such as a file's `mod tests`) enclose it: their `super` is the file."""
    opens = {m.end() - 1 for m in re.finditer(r"\bmod\s+\w+\s*\{", code)}
    depth, stack, out = 0, [], []
    for i, ch in enumerate(code):
        if ch == "{":
            stack.append(i in opens)
            depth += i in opens
        elif ch == "}" and stack:
            depth -= stack.pop()
        out.append(depth)
    return out


def resolve(path, here, children, mods, inline=0):
    """The module tuple a path names, or None if it is outside the crate."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = [], parts[1:]
    elif parts[0] in ("super", "self"):
        base = list(here) + ["<inline>"] * inline
        rest = parts
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    elif parts[0] in children:
        base, rest = list(here), parts
    else:
        return None
    while base and base[-1] == "<inline>":
        base.pop()
        # Still inside the file: an inline module's items are the file's.
        if not rest:
            return tuple(base)
    mod = tuple(base)
    for p in rest:
        if tuple(list(mod) + [p]) in mods:
            mod = tuple(list(mod) + [p])
        else:
            break
    return mod


def edges(mods):
    graph = {}
    for mod, path in mods.items():
        with open(path) as f:
            code = strip(f.read())
        children = set(re.findall(r"\bmod\s+(\w+)\s*;", code))
        depths = inline_depths(code)
        paths = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            paths += [(p, depths[m.start()]) for p in expand(m.group(1))]
        for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", code):
            paths.append((m.group(0), depths[m.start()]))
        if children:
            alt = "|".join(sorted(children))
            for m in re.finditer(r"(?<![:\w])(?:%s)(?:::\w+)+" % alt, code):
                paths.append((m.group(0), depths[m.start()]))
        deps = set()
        for p, inline in paths:
            target = resolve(p, mod, children, mods, inline)
            if target is None or target == mod:
                continue
            # A file declaring a child module may name it; that is the
            # child's own dependency direction, not a cycle.
            deps.add(target)
        graph[mod] = deps
    return graph


def cycles(graph):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def name(mod, mods):
    return mods[mod]


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    mods = module_files(src)
    graph = edges(mods)
    found = cycles(graph)
    if not found:
        print(f"import-cycles: no cycle among {len(mods)} files")
        return 0
    for comp in found:
        members = set(comp)
        print("import-cycles: these files import each other:")
        for m in sorted(comp):
            deps = sorted(name(d, mods) for d in graph[m] if d in members)
            print(f"  {name(m, mods)} -> {', '.join(deps)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
