"""Fashion-MNIST from Debian's dataset-fashion-mnist, as backprop reads it: IDX files,
pixels / 255, labels 0..9. Shared by the seed references."""
import gzip
import os

import numpy as np

FASHION = "/usr/share/datasets/fashion-mnist"


def idx(name):
    with gzip.open(os.path.join(FASHION, name), "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion(limit=None):
    """(X_train, y_train, X_test, y_test): rows of 784 pixels in [0, 1], float64."""
    X = idx("train-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
    y = idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    Xt = idx("t10k-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
    yt = idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if limit:
        X, y = X[:limit], y[:limit]
    return X, y, Xt, yt


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def cross_entropy(a, Y):
    """Per-unit binary cross-entropy summed over the units, the seeds' cost, per example
    mean; nan_to_num as seed 001's CrossEntropyCost.fn does."""
    return float(np.sum(np.nan_to_num(-Y * np.log(a) - (1 - Y) * np.log(1 - a))) / len(a))
