"""configs/ng-digits.ini trained two ways: 400 steps of full-batch gradient descent (the
seed's algorithm, the config as it is) and L-BFGS (optimizer = lbfgs, a checkpoint after
every iteration). Measures both on seed 003's regularised cost
    J = (1/m) sum_i sum_k [-y log h - (1 - y) log(1 - h)] + lambda/(2m) sum W^2
(computed here in float64 from the checkpoints' weights, on the config's 5000 training
examples), and says after how many cost evaluations L-BFGS went below gradient descent's
final J and its final training cost (the mean data cost), and below the lowest training
cost gradient descent reached in any of its steps (metrics.csv's train_cost: with
learning_rate 2.0 its cost oscillates from step to step near the end).

usage: lbfgs_vs_gd.py GD_DIR LBFGS_DIR    (checkpoint directories of the two runs)
Exits 1 unless L-BFGS ends lower on both in fewer evaluations than gradient descent's 400.
"""
import glob
import os
import re
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds"))
from common import cross_entropy, fashion, sigmoid  # noqa: E402

LAMBDA = 1.0
X, y, _, _ = fashion(5000)
Y = np.eye(10)[y]


def costs(path):
    """(J, data cost, evaluations so far) of a checkpoint's weights."""
    with h5py.File(path, "r") as f:
        W = [f[f"model/layer_{l}/W"][()].astype(np.float64) for l in range(2)]
        b = [f[f"model/layer_{l}/b"][()].astype(np.float64) for l in range(2)]
        step = int(f["train"].attrs["global_step"])
    a = X
    for Wl, bl in zip(W, b):
        a = sigmoid(a @ Wl.T + bl)
    data = cross_entropy(a, Y)
    return data + LAMBDA / (2 * len(X)) * sum(float(np.sum(w * w)) for w in W), data, step


def main(gd_dir, lbfgs_dir):
    J_gd, data_gd, steps_gd = costs(os.path.join(gd_dir, "latest.h5"))
    files = sorted(glob.glob(os.path.join(lbfgs_dir, "ckpt-*.h5")),
                   key=lambda p: int(re.search(r"ckpt-(\d+)", p).group(1)))
    rows = [costs(p) for p in files]
    first_J = next((r for r in rows if r[0] < J_gd), None)
    first_data = next((r for r in rows if r[1] < data_gd), None)
    with open(os.path.join(gd_dir, "metrics.csv")) as f:
        best_gd = min(float(line.split(",")[2]) for line in f.read().splitlines()[1:])
    first_best = next((r for r in rows if r[1] < best_gd), None)
    J_lb, data_lb, steps_lb = rows[-1]
    print(f"gradient descent: {steps_gd} evaluations, J {J_gd:.4f}, training cost {data_gd:.4f}")
    print(f"L-BFGS: {len(rows)} iterations, {steps_lb} evaluations, J {J_lb:.4f}, "
          f"training cost {data_lb:.4f}")
    print(f"gradient descent's lowest training cost in any step: {best_gd:.4f}")
    for name, d in (("gradient descent", gd_dir), ("L-BFGS", lbfgs_dir)):
        with open(os.path.join(d, "metrics.csv")) as f:
            print(f"{name}: final test accuracy {100 * float(f.read().splitlines()[-1].split(',')[7]):.2f} %")
    for name, r in (("final J", first_J), ("final training cost", first_data),
                    ("lowest training cost", first_best)):
        print(f"L-BFGS below gradient descent's {name} after "
              + (f"{r[2]} evaluations" if r else "never"))
    ok = first_J and first_best and J_lb < J_gd and steps_lb < steps_gd
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
