#!/usr/bin/env python3
"""Summarise the per-SASS-instruction profile that `scripts/device-check.sh --source-profile`
writes (scan-source.txt: a '==== <bench case>: <kernel>' line per profiled kernel, then the
`ncu --page source --print-source sass --csv` table of that kernel).

  scripts/sass-profile.py scan-source.txt [--kernel S] [--top N] [--dump MIN] [--compare OLD]

Per kernel (or only those whose section name contains S):
  - warp instructions executed and stall samples in all;
  - loop levels: the instructions grouped by how often each was executed (a loop body's
    instructions all run the same number of times), the heaviest first, with their share of
    the instructions and of the stall samples: the per-state loop, the per-group and the
    per-chunk work of the scan kernels show up as separate levels;
  - the opcode mix and the stall reasons (shares of all samples), and the shared-memory
    wavefronts beyond the ideal (bank conflicts) with the instructions that cause most;
  - the N instructions with the most stall samples, with their two main reasons;
  - --dump MIN: every instruction executed at least MIN times, in address order (the hot loop);
  - --compare OLD: the same totals from an older profile, for the sections both have.
Only the Python standard library; exit status 2 on a file that is not such a profile.
"""
import argparse
import collections
import csv
import io
import re
import sys


def load(path):
    """{section name: list of rows (dicts)} for every section that holds a source table."""
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError as e:
        print(f"sass-profile: cannot read {path}: {e.strerror}", file=sys.stderr)
        sys.exit(2)
    parts = re.split(r"^==== (.*)$", text, flags=re.M)
    sections = {}
    for i in range(1, len(parts), 2):
        lines = parts[i + 1].splitlines()
        start = next((j for j, line in enumerate(lines) if line.startswith('"Address"')), None)
        if start is None:
            continue
        rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
        header = rows[0]
        sections[parts[i].strip()] = [dict(zip(header, r)) for r in rows[1:] if len(r) == len(header)]
    if not sections:
        print(f"sass-profile: {path}: no '==== <case>' section with an ncu source table (\"Address\",...) in it",
              file=sys.stderr)
        sys.exit(2)
    return sections


def num(row, key):
    try:
        return float(row.get(key, "0").replace(",", ""))
    except ValueError:
        return 0.0


EXEC = "Instructions Executed"
SAMPLES = "Warp Stall Sampling (All Samples)"


def opcode(row):
    words = row.get("Source", "").split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else "?"


def stall_keys(rows):
    return [k for k in rows[0] if k.startswith("stall_") and "Not Issued" not in k] if rows else []


def reasons(row, keys, n=2):
    top = sorted(((num(row, k), k[6:]) for k in keys), reverse=True)[:n]
    return " ".join(f"{name}:{int(v)}" for v, name in top if v > 0)


def totals(rows):
    return sum(num(r, EXEC) for r in rows), sum(num(r, SAMPLES) for r in rows)


def pct(part, whole):
    return 100.0 * part / whole if whole else 0.0


def summarise(name, rows, args):
    inst, samples = totals(rows)
    keys = stall_keys(rows)
    print(f"### {name}")
    print(f"  {len(rows)} SASS instructions; {inst:.4g} warp instructions executed; {samples:.0f} stall samples")

    levels = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for r in rows:
        ex = num(r, EXEC)
        if ex > 0:
            lv = levels[ex]
            lv[0] += 1
            lv[1] += ex
            lv[2] += num(r, SAMPLES)
    print("  loop levels (executions per instruction: instructions, share of executed, share of samples):")
    for ex, (n, e, s) in sorted(levels.items(), key=lambda kv: -kv[1][2])[: args.levels]:
        print(f"    {ex:12.4g} x {n:5d}   {pct(e, inst):5.1f} %   {pct(s, samples):5.1f} %")

    ops_exec, ops_samp = collections.Counter(), collections.Counter()
    for r in rows:
        op = opcode(r)
        ops_exec[op] += num(r, EXEC)
        ops_samp[op] += num(r, SAMPLES)
    print("  opcodes (executed / samples): " +
          ", ".join(f"{op} {pct(v, inst):.1f}/{pct(ops_samp[op], samples):.1f}" for op, v in ops_exec.most_common(14)))
    stall = {k[6:]: sum(num(r, k) for r in rows) for k in keys}
    all_stall = sum(stall.values())
    print("  stall reasons: " + ", ".join(
        f"{k} {pct(v, all_stall):.1f} %" for k, v in sorted(stall.items(), key=lambda kv: -kv[1])[:10] if v > 0))
    smem_excess = sum(num(r, "L1 Wavefronts Shared Excessive") for r in rows)
    smem = sum(num(r, "L1 Wavefronts Shared") for r in rows)
    if smem > 0:
        print(f"  shared-memory wavefronts: {smem:.4g}, of which excessive {pct(smem_excess, smem):.1f} % "
              "(bank conflicts; for LDGSTS also the spread of the global addresses)")
        worst = [r for r in sorted(rows, key=lambda r: -num(r, "L1 Wavefronts Shared Excessive"))[:4]
                 if num(r, "L1 Wavefronts Shared Excessive") > 0]
        for r in worst:
            print(f"    {r.get('Address', '')[-5:]} {pct(num(r, 'L1 Wavefronts Shared Excessive'), smem):5.1f} % of "
                  f"wavefronts excessive  {r.get('Source', '').strip()[:56]}")

    print(f"  top {args.top} instructions by stall samples:")
    for r in sorted(rows, key=lambda r: -num(r, SAMPLES))[: args.top]:
        print(f"    {r.get('Address', '')[-5:]} {num(r, EXEC):10.4g} {pct(num(r, SAMPLES), samples):5.1f} %  "
              f"{r.get('Source', '').strip()[:56]:56s} {reasons(r, keys)}")
    if args.dump is not None:
        print(f"  instructions executed at least {args.dump:g} times:")
        for r in rows:
            if num(r, EXEC) >= args.dump:
                print(f"    {r.get('Address', '')[-5:]} {num(r, EXEC):10.4g} {num(r, SAMPLES):7.0f}  "
                      f"{r.get('Source', '').strip()[:56]:56s} {reasons(r, keys)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", help="scan-source.txt from scripts/device-check.sh --source-profile")
    ap.add_argument("--kernel", default="", help="only the sections whose name contains this")
    ap.add_argument("--top", type=int, default=12, help="instructions listed by stall samples (default 12)")
    ap.add_argument("--levels", type=int, default=8, help="loop levels listed (default 8)")
    ap.add_argument("--dump", type=float, default=None, metavar="MIN",
                    help="list every instruction executed at least MIN times")
    ap.add_argument("--compare", metavar="OLD", help="an older scan-source.txt: totals side by side")
    args = ap.parse_args()
    if args.top < 0 or args.levels < 0:
        ap.error("--top and --levels take a count >= 0")

    sections = {k: v for k, v in load(args.profile).items() if args.kernel in k}
    if not sections:
        print(f"sass-profile: no section of {args.profile} has '{args.kernel}' in its name", file=sys.stderr)
        sys.exit(2)
    for name, rows in sections.items():
        summarise(name, rows, args)
    if args.compare:
        old = load(args.compare)
        print(f"### against {args.compare} (warp instructions, stall samples: old -> new)")
        for name, rows in sections.items():
            if name in old:
                (oi, os_), (ni, ns) = totals(old[name]), totals(rows)
                print(f"  {name}: {oi:.4g} -> {ni:.4g} ({pct(ni, oi):.0f} %), "
                      f"{os_:.0f} -> {ns:.0f} ({pct(ns, os_):.0f} %)")
            else:
                print(f"  {name}: not in {args.compare}")


if __name__ == "__main__":
    main()
