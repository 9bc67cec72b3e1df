"""Compares the /model weights of two checkpoints.

usage: compare_weights.py A.h5 B.h5 BOUND
Prints the largest absolute difference; exits 1 if it exceeds BOUND (0 = bit-identical).
"""
import sys

import h5py
import numpy as np


def weights(path):
    with h5py.File(path, "r") as f:
        model = f["model"]
        return [model[name][kind][()] for name in sorted(model) for kind in ("W", "b")]


def main(a, b, bound):
    worst = 0.0
    for x, y in zip(weights(a), weights(b)):
        if bound == 0 and x.tobytes() != y.tobytes():
            worst = max(worst, float(np.max(np.abs(x - y))), np.finfo(np.float64).tiny)
        else:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))))
    print(f"max |difference| {worst:.3g} (bound {bound:g})")
    return 0 if worst <= bound else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
