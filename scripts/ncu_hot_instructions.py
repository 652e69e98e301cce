#!/usr/bin/env python3
"""The SASS instructions where a kernel's warps stalled most, from Nsight Compute's source page:

    ncu --import REPORT.ncu-rep --page source --csv --print-source sass > source.csv
    python3 scripts/ncu_hot_instructions.py source.csv [--top 25]

For each kernel in the CSV: its instructions ranked by warp-stall samples, each with its
address, its text, its share of the kernel's samples and its largest stall reasons. This is
what says which load or barrier a step waits on (the profile step of `make gpu-check`,
scripts/ncu_profile.sh). The CSV's columns vary between Nsight Compute versions, so the columns
are found by name; a file it cannot read is reported, and the script still exits 0: it only
adds to a profile that was already taken.
"""

import argparse
import csv
import io
import sys


def number(text):
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return 0.0


def tables(text):
    """The CSV's tables, [(title, header, rows)]: a new table starts at each header row (one
    that names the instruction's source and address), a title is any line before it that is not
    part of a table (Nsight Compute names the kernel there)."""
    out, title, header, rows = [], "", None, []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        names = [c.strip() for c in row]
        if "Source" in names and any("Address" in c for c in names):
            if header is not None:
                out.append((title, header, rows))
            header, rows = names, []
        elif header is not None and len(row) == len(header):
            rows.append(row)
        else:
            if header is not None:
                out.append((title, header, rows))
                header, rows = None, []
            title = " ".join(c for c in names if c)
    if header is not None:
        out.append((title, header, rows))
    return out


def report(title, header, rows, top):
    samples = next((k for k, c in enumerate(header) if "Warp Stall Sampling (All" in c), None)
    if samples is None:
        samples = next((k for k, c in enumerate(header) if "Stall Sampling" in c), None)
    if samples is None:
        print(f"{title or 'kernel'}: no warp-stall sampling column among {len(header)} columns")
        return
    address = next(k for k, c in enumerate(header) if "Address" in c)
    source = header.index("Source")
    reasons = [k for k, c in enumerate(header)
               if k != samples and ("stall" in c.lower() and "Sampling" not in c)]
    total = sum(number(r[samples]) for r in rows) or 1.0
    print(f"\n{title or 'kernel'}: {len(rows)} instructions, {total:.0f} warp-stall samples; "
          f"the top {top}:")
    for r in sorted(rows, key=lambda r: -number(r[samples]))[:top]:
        parts = sorted(((number(r[k]), header[k]) for k in reasons), reverse=True)[:3]
        why = ", ".join(f"{name} {value:.0f}" for value, name in parts if value > 0)
        print(f"  {100 * number(r[samples]) / total:5.1f}%  {r[address]:>8}  {r[source].strip()[:60]:60}"
              f"  {why}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", help="the source page of an Nsight Compute report, as CSV")
    ap.add_argument("--top", type=int, default=25, help="instructions shown per kernel")
    args = ap.parse_args()
    try:
        with open(args.csv, errors="replace") as f:
            found = tables(f.read())
        if not found:
            print(f"{args.csv}: no table of instructions found")
        for title, header, rows in found:
            report(title, header, rows, args.top)
    except Exception as e:  # noqa: BLE001 (an addition to the profile; never its failure)
        print(f"{args.csv}: could not be read ({type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
