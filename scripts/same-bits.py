"""Compares two run directories written by the same config: every checkpoint's datasets and
attributes bit for bit, and the metrics CSV, leaving out what measures time (elapsed_s,
epoch_train_s, samples_per_s and the metrics table's last two columns) and step_times.csv.

usage: same-bits.py OLD_DIR NEW_DIR
Prints each difference; exits 1 when there is one, or when the directories hold different
checkpoints.
"""
import os
import sys

import h5py
import numpy as np

TIMES = {"elapsed_s", "epoch_train_s", "samples_per_s"}


def raw(v):
    v = np.asarray(v)
    return repr(v.tolist()).encode() if v.dtype == object else v.tobytes()


def items(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                if k not in TIMES:
                    out[f"{name}@{k}"] = raw(v)
            if isinstance(obj, h5py.Dataset):
                v = obj[()]
                if name.endswith("metrics") and getattr(v, "ndim", 0) == 2:
                    v = v[:, :-2]
                out[name] = raw(v)
        for k, v in f.attrs.items():
            out[f"/@{k}"] = raw(v)
        f.visititems(visit)
    return out


def csv_rows(path):
    with open(path) as f:
        return [",".join(line.rstrip("\n").split(",")[:-2]) for line in f]


def main(old, new):
    bad = 0
    a = sorted(n for n in os.listdir(old) if n.endswith(".h5"))
    b = sorted(n for n in os.listdir(new) if n.endswith(".h5"))
    if a != b or not a:
        print(f"checkpoints differ: {a} vs {b}")
        return 1
    for name in a:
        x, y = items(os.path.join(old, name)), items(os.path.join(new, name))
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                print(f"{name}: {key} differs")
                bad += 1
    if csv_rows(os.path.join(old, "metrics.csv")) != csv_rows(os.path.join(new, "metrics.csv")):
        print("metrics.csv differs")
        bad += 1
    print(f"{old} vs {new}: {len(a)} checkpoints, {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
