#!/usr/bin/env python3
"""The layers of src/ as src/README draws them, checked against the code.

    layers.py SRC_DIR INCLUDE_DIR CORE_LIB VERSION_SCRIPT SHARED_LIB

Fails (exit 1, one line per finding) when:
  - a file of src/ is in no layer of src/README;
  - a file includes a header of a higher layer, or of its own layer listed
    after it (the include graph has no circle and runs downward);
  - an object of the core static library (everything but the entry points)
    has an undefined reference to a name the version script exports as an
    interposer: inside libslowdog.so that name is slowdog's own wrapper;
  - libslowdog.so exports anything but the version script's names, or
    misses one of them.
"""
import os
import re
import subprocess
import sys


def layer_order(readme):
    rank = {}
    pos = 0
    for line in open(readme, encoding="utf-8"):
        m = re.match(r"^L(\d) [a-z]+:((?:\s+[a-z_0-9]+)+)\s*$", line)
        if not m:
            continue
        for name in m.group(2).split():
            if name in rank:
                sys.exit("layers: %s is listed twice in %s" % (name, readme))
            rank[name] = (int(m.group(1)), pos)
            pos += 1
    return rank


def check_includes(src, rank):
    bad = []
    for f in sorted(os.listdir(src)):
        base, ext = os.path.splitext(f)
        if ext not in (".c", ".h"):
            continue
        if base not in rank:
            bad.append("%s: in no layer of src/README" % f)
            continue
        for n, line in enumerate(open(os.path.join(src, f), encoding="utf-8"), 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)\.h"', line)
            if not m or m.group(1) == base:
                continue
            dep = os.path.basename(m.group(1))
            if dep not in rank:
                bad.append("%s:%d: includes %s.h, in no layer" % (f, n, dep))
            elif rank[dep] >= rank[base]:
                bad.append("%s:%d: includes %s.h (L%d), not below %s (L%d)" %
                           (f, n, dep, rank[dep][0], base, rank[base][0]))
    return bad


def exported(version_script):
    text = open(version_script, encoding="utf-8").read()
    glob = text.split("global:", 1)[1].split("local:", 1)[0]
    return {s.strip() for s in glob.replace("\n", " ").split(";") if s.strip()}


def check_core(core_lib, names):
    api = {n for n in names if n.startswith("slowdog_")}
    interposed = names - api
    out = subprocess.run(["nm", "-u", "-A", "--without-symbol-versions", core_lib],
                         stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    bad = []
    for line in out.splitlines():
        parts = line.split()
        sym = parts[-1].split("@")[0]
        if sym in interposed:
            obj = parts[0].rstrip(":").split(":")[-1]
            bad.append("%s: calls %s, which is slowdog's own interposer in "
                       "libslowdog.so (use real_%s from real.h)" % (obj, sym, sym))
    return bad, len(interposed)


def check_exports(shared, names):
    out = subprocess.run(["nm", "-D", "--defined-only", "--without-symbol-versions", shared],
                         stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    have = {line.split()[-1] for line in out.splitlines() if line.strip()}
    bad = ["%s exports %s, which is not in the version script" % (os.path.basename(shared), n)
           for n in sorted(have - names)]
    bad += ["%s does not define %s" % (os.path.basename(shared), n)
            for n in sorted(names - have)]
    return bad


def main():
    src, _include, core_lib, version_script, shared = sys.argv[1:6]
    rank = layer_order(os.path.join(src, "README"))
    rank.setdefault("slowdog", (0, -1))
    bad = check_includes(src, rank)
    names = exported(version_script)
    core_bad, count = check_core(core_lib, names)
    bad += core_bad
    bad += check_exports(shared, names)
    for b in bad:
        print("layers: " + b)
    if count < 40:
        print("layers: only %d interposed names in %s" % (count, version_script))
        return 1
    if not bad:
        print("layers: %d files in 6 layers, includes run downward, the exports are the "
              "version script's; the core "
              "calls none of the %d interposed names" % (len(rank), count))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
