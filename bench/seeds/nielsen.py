"""Seed 001's algorithm (Nielsen's network.py with CrossEntropyCost and L2), in numpy,
vectorised over each mini-batch: [784, 30, 10] sigmoid units, per-unit cross-entropy
(output delta a - y), weights N(0, 1)/sqrt(fan_in) and biases N(0, 1), each epoch a fresh
shuffle cut into mini-batches of m, and the seed's update
    w <- (1 - eta lambda / n) w - (eta / m) sum dw,   b <- b - (eta / m) sum db.
Summing the batch's per-example gradients with one matrix product is the same sum as the
seed's loop over (x, y). Prints one JSON object: per epoch, the test accuracy and the
training cost as backprop's metrics define it: each mini-batch's data cost (no L2 term)
before its update, averaged over the epoch's examples."""
import argparse
import json

import numpy as np

from common import cross_entropy, fashion, sigmoid


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--eta", type=float, default=3.0)
    p.add_argument("--lmbda", type=float, default=0.1)
    a = p.parse_args()
    X, y, Xt, yt = fashion()
    Y = np.eye(10)[y]
    n, sizes = len(X), [784, 30, 10]
    rng = np.random.default_rng(a.seed)
    W = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
    b = [rng.standard_normal(o) for o in sizes[1:]]
    curve = []
    for epoch in range(a.epochs):
        order = rng.permutation(n)
        cost = 0.0
        for k in range(0, n, a.batch):
            idx = order[k:k + a.batch]
            a0 = X[idx]
            a1 = sigmoid(a0 @ W[0].T + b[0])
            a2 = sigmoid(a1 @ W[1].T + b[1])
            cost += cross_entropy(a2, Y[idx]) * len(idx)
            d2 = a2 - Y[idx]                      # CrossEntropyCost.delta
            d1 = (d2 @ W[1]) * a1 * (1 - a1)
            m = len(idx)
            for l, (d, prev) in enumerate(((d1, a0), (d2, a1))):
                W[l] = (1 - a.eta * a.lmbda / n) * W[l] - (a.eta / m) * (d.T @ prev)
                b[l] = b[l] - (a.eta / m) * d.sum(axis=0)
        test = sigmoid(sigmoid(Xt @ W[0].T + b[0]) @ W[1].T + b[1])
        curve.append({"epoch": epoch + 1, "train_cost": cost / n,
                      "test_accuracy": float(np.mean(np.argmax(test, 1) == yt))})
    print(json.dumps({"seed": a.seed, "curve": curve}))


if __name__ == "__main__":
    main()
