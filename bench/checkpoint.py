"""The driver of scripts/bench-checkpoint.sh: what checkpoints cost training. W3 (the
largest workload of docs/benchmarks.md, 5.8 M parameters) at 2 ranks, with no checkpoint
but the last, and with one every 20 steps: written in the background (this tree), and
written while every rank waits (the build before background writes, when given). Runs
alternate, so a slow spell of the shared machine spreads over all of them. Writes
docs/checkpoints.md."""
import argparse
import csv
import datetime
import os
import re
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import MCA, WORKLOADS, config, machine, run  # noqa: E402

STEPS = 100  # an epoch of 100 steps of 256: data.limit = 25600


def train(binary, tmp, tag, every_steps):
    """Samples/s of epochs 2 and 3 by the wall clock (checkpoints included), and the
    checkpoint line of the output if any."""
    ini, rundir = f"{tmp}/{tag}.ini", f"{tmp}/{tag}"
    config(ini, "W3", rundir, 3)
    out = run(["mpirun", "--oversubscribe", "--bind-to", "core", "-np", "2"] + MCA +
              [binary, "train", ini, "--set", f"data.limit={STEPS * WORKLOADS['W3'][3]}",
               "--set", f"checkpoint.every_steps={every_steps}", "--set", "checkpoint.keep=2"])
    with open(f"{rundir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    wall = float(rows[-1]["elapsed_s"]) - float(rows[0]["elapsed_s"])
    rate = (len(rows) - 1) * STEPS * WORKLOADS["W3"][3] / wall
    line = re.search(r"^checkpoints: .*$", out, re.M)
    size = os.path.getsize(f"{rundir}/latest.h5")
    run(["rm", "-rf", rundir])
    return rate, line.group(0) if line else "", size


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backprop", required=True)
    p.add_argument("--before", help="backprop built before background checkpoints")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    kinds = [("none", args.backprop, 0), ("background", args.backprop, 20)]
    if args.before:
        kinds.append(("waiting", args.before, 20))
    rates = {k: [] for k, _, _ in kinds}
    lines, sizes = {}, {}
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.out))) as tmp:
        for i in range(args.repeats):
            for kind, binary, every in kinds:
                rate, line, size = train(binary, tmp, f"{kind}{i}", every)
                rates[kind].append(rate)
                sizes[kind] = size
                lines[kind] = line or lines.get(kind, "")
                print(f"{kind:10s} run {i + 1}: {rate:.0f} samples/s {line}", flush=True)
    base = statistics.median(rates["none"])
    names = {"none": "no checkpoint until the end",
             "background": "every 20 steps, written in the background (this tree)",
             "waiting": "every 20 steps, all ranks waiting for the write (before)"}
    table = ["| checkpoints | samples/s (median) | runs | against none |",
             "|---|---|---|---|"]
    for kind, _, _ in kinds:
        med = statistics.median(rates[kind])
        runs = ", ".join(f"{r:.0f}" for r in rates[kind])
        table.append(f"| {names[kind]} | {med:.0f} | {runs} | {100 * (med / base - 1):+.1f} % |")
    text = [
        "# What checkpoints cost training",
        "",
        f"Measured {datetime.date.today()} on {machine()} by `scripts/bench-checkpoint.sh`.",
        "W3 ([784, 2048, 2048, 10], 5.8 M parameters, batch 256) at 2 ranks on Fashion-MNIST,",
        f"epochs of {STEPS} steps; samples/s by the wall clock over epochs 2 and 3, checkpoints",
        "included. W3 trains without momentum: this tree stores the all-zero momentum buffer",
        "as datasets never written, which take no space; the build before wrote the zeros.",
        f"A checkpoint file: {sizes['background'] / 1e6:.1f} MB" +
        (f" (before: {sizes['waiting'] / 1e6:.1f} MB)." if "waiting" in sizes else "."),
        "",
        *table,
        "",
        "What the trainer printed about its checkpoints, last run of each kind:",
        "",
        *(f"- {names[k]}: `{lines[k]}`" for k, _, _ in kinds if lines.get(k)),
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(text))
    print("\n".join(table))


if __name__ == "__main__":
    main()
