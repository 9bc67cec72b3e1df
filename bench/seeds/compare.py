"""backprop's run of a seed config against the seed's numpy reference over several seeds.

usage: compare.py nielsen|ng METRICS.CSV REF.json...
Passes (exit 0) when
  - backprop's final test accuracy lies within the references' range widened by 1 point,
  - and its training-cost curve tracks theirs: the RMS difference between backprop's curve
    and the references' mean is at most twice the largest RMS difference between one
    reference and the mean of the others (backprop is held to about the spread the
    algorithm shows from seed to seed).
The training cost is compared where both have it: every epoch (nielsen), and every 10th
full-batch step (ng: backprop's epoch e is the reference's iteration e - 1, the cost before
that step). Prints one line per check."""
import csv
import json
import math
import sys


def rms(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / len(a))


def mean(curves):
    return [sum(c[i] for c in curves) / len(curves) for i in range(len(curves[0]))]


def main(kind, metrics, refs):
    refs = [json.load(open(r)) for r in refs]
    rows = list(csv.DictReader(open(metrics)))
    by_epoch = {int(r["epoch"]): r for r in rows}
    if kind == "nielsen":
        ref_curves = [[p["train_cost"] for p in r["curve"]] for r in refs]
        ref_final = [r["curve"][-1]["test_accuracy"] for r in refs]
        ours = [float(by_epoch[p["epoch"]]["train_cost"]) for p in refs[0]["curve"]]
    else:
        points = [p["iteration"] for p in refs[0]["curve"] if p["iteration"] + 1 in by_epoch]
        ref_curves = [[p["train_cost"] for p in r["curve"] if p["iteration"] in points]
                      for r in refs]
        ref_final = [r["test_accuracy"] for r in refs]
        ours = [float(by_epoch[i + 1]["train_cost"]) for i in points]
    final = float(rows[-1]["test_accuracy"])
    lo, hi = min(ref_final) - 0.01, max(ref_final) + 0.01
    ok_final = lo <= final <= hi
    spread = max(rms(c, mean([o for j, o in enumerate(ref_curves) if j != i]))
                 for i, c in enumerate(ref_curves))
    ours_rms = rms(ours, mean(ref_curves))
    ok_curve = ours_rms <= 2 * spread
    print(f"{kind}: references' final test accuracy {', '.join(f'{100 * a:.2f}' for a in ref_final)} %"
          f" (seeds {', '.join(str(r['seed']) for r in refs)}); backprop {100 * final:.2f} %"
          f" -> {'ok' if ok_final else 'FAIL'} (allowed {100 * lo:.2f} to {100 * hi:.2f})")
    print(f"{kind}: training cost over {len(ours)} points, RMS from the references' mean:"
          f" backprop {ours_rms:.4f}, references among themselves up to {spread:.4f}"
          f" -> {'ok' if ok_curve else 'FAIL'} (allowed {2 * spread:.4f})")
    return 0 if ok_final and ok_curve else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
