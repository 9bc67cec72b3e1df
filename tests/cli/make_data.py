"""Writes the small HDF5 data sets the command-line tests train and fail on.

usage: make_data.py DIR [big]
  good.h5   200 x 4 float32, labels 0..2 from a fixed linear rule (learnable)
  rows.h5   /X has 6 rows, /y has 5
  label.h5  a label of 7 for a 3-class network
  nan.h5    a NaN in /X
  wide.h5   200 x 5: one column too many for layers = 4, ...
With big, only:
  big.h5    3000 x 64 float32, labels 0..9 from a fixed linear rule: steps of
            milliseconds, for runs stopped mid-epoch
"""
import os
import sys

import h5py
import numpy as np


def write(path, X, y):
    with h5py.File(path, "w") as f:
        f["X"] = X
        f["y"] = y


def main(out):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((200, 4)).astype(np.float32)
    y = np.argmax(X[:, :3] + 0.5 * X[:, 3:4], axis=1).astype(np.int32)
    write(os.path.join(out, "good.h5"), X, y)
    write(os.path.join(out, "rows.h5"), X[:6], y[:5])
    bad = y.copy()
    bad[3] = 7
    write(os.path.join(out, "label.h5"), X, bad)
    nan = X.copy()
    nan[17, 2] = np.nan
    write(os.path.join(out, "nan.h5"), nan, y)
    write(os.path.join(out, "wide.h5"), rng.standard_normal((200, 5)).astype(np.float32), y)


def big(out):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3000, 64)).astype(np.float32)
    W = rng.standard_normal((64, 10)).astype(np.float32)
    write(os.path.join(out, "big.h5"), X, np.argmax(X @ W, axis=1).astype(np.int32))


if __name__ == "__main__":
    if sys.argv[2:] == ["big"]:
        big(sys.argv[1])
    else:
        main(sys.argv[1])
