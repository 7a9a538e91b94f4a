#!/usr/bin/env python3
"""Module-level import graph of src/ (file granularity): which module each file's `use`
lines and crate:: paths name; prints any cycle."""
import os, re, sys
root = sys.argv[1]
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        path = os.path.join(dp, f)
        rel = os.path.relpath(path, root)[:-3]
        parts = rel.split(os.sep)
        if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
        mods['::'.join(parts)] = path
def resolve(cur, ref):
    segs = ref.split('::')
    if segs[0] == 'crate': base = []; segs = segs[1:]
    elif segs[0] == 'super':
        base = cur.split('::')[:-1] if cur else []
        segs = segs[1:]
        while segs and segs[0] == 'super': base = base[:-1]; segs = segs[1:]
    elif segs[0] == 'self': base = cur.split('::') if cur else []; segs = segs[1:]
    else: return None
    best = None
    for i in range(len(segs), -1, -1):
        cand = '::'.join(base + segs[:i])
        if cand in mods: best = cand; break
    return best
graph = {m: set() for m in mods}
for m, path in mods.items():
    text = open(path).read()
    text = re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*', '', text, flags=re.S)
    text = re.sub(r'//.*', '', text)
    for ref in re.findall(r'\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)', text):
        t = resolve(m, ref)
        if t is not None and t != m and not m.startswith(t + '::') and not (t == '' ):
            graph[m].add(t)
    # brace groups: use super::{a::X, b::Y}
    for prefix, group in re.findall(r'\b((?:crate|super)(?:::[A-Za-z_]\w*)*)::\{([^}]*)\}', text):
        for item in group.split(','):
            item = item.strip().split(' as ')[0]
            if not item: continue
            t = resolve(m, prefix + '::' + item.replace('{','').strip())
            if t is not None and t != m and not m.startswith(t + '::') and t != '':
                graph[m].add(t)
# parent modules (mod.rs) re-export children: ignore edges from a parent to its children
for m in graph:
    graph[m] = {t for t in graph[m] if not t.startswith(m + '::') or m == ''}
graph.pop('', None)
# collapse to sibling level for readability: report cycles among files
sys.setrecursionlimit(10000)
index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
def strong(v):
    index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
    for w in graph.get(v, ()):
        if w not in graph: continue
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in graph:
    if v not in index: strong(v)
print(f"{len(graph)} modules, {sum(len(e) for e in graph.values())} import edges")
for comp in sccs: print("CYCLE:", sorted(comp))
if not sccs: print("no import cycle")
sys.exit(1 if sccs else 0)
