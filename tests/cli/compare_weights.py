"""Compares the /model weights of two checkpoints.

usage: compare_weights.py A.h5 B.h5 BOUND [optimizer]
Prints the largest absolute difference; exits 1 if it exceeds BOUND (0 = bit-identical).
With `optimizer`, every dataset and attribute under /optimizer is compared too (its name
among them).
"""
import sys

import h5py
import numpy as np


def weights(path, optimizer=False):
    with h5py.File(path, "r") as f:
        model = f["model"]
        out = [model[name][kind][()] for name in sorted(model) for kind in ("W", "b")]
        if optimizer:  # the names of its objects and attributes, then their values
            names, values = [], []

            def visit(name, obj):
                names.append(name)
                names.extend(f"{name}@{k}" for k in sorted(obj.attrs))
                values.extend(np.atleast_1d(obj.attrs[k]) for k in sorted(obj.attrs))
                if isinstance(obj, h5py.Dataset):
                    values.append(obj[()])

            visit("optimizer", f["optimizer"])
            f["optimizer"].visititems(visit)
            out += [np.asarray(names, dtype=object)] + values
        return out


def main(a, b, bound, optimizer=False):
    worst = 0.0
    wa, wb = weights(a, optimizer), weights(b, optimizer)
    if len(wa) != len(wb):
        print("different layouts")
        return 1
    for x, y in zip(wa, wb):
        if x.dtype.kind in "OSU" or y.dtype.kind in "OSU":  # names and strings: equal or not
            if x.shape != y.shape or list(x.ravel()) != list(y.ravel()):
                print("different names or strings under /optimizer")
                return 1
            continue
        if bound == 0 and x.tobytes() != y.tobytes():
            worst = max(worst, float(np.max(np.abs(x - y))), np.finfo(np.float64).tiny)
        else:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))))
    print(f"max |difference| {worst:.3g} (bound {bound:g})")
    return 0 if worst <= bound else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]),
                  len(sys.argv) > 4 and sys.argv[4] == "optimizer"))
