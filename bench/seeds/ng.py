"""Seed 003's algorithm (Ng's course), in numpy: [784, 25, 10] sigmoid units, the
regularised cost
    J = -1/m sum_i sum_k [y log h + (1 - y) log(1 - h)] + lambda/(2m) sum Theta^2 (no bias),
weights and biases uniform in (-0.12, 0.12) (the course's rand * 2 eps - eps; the seed's
text has randn, which the course does not), forward pass, deltas
    delta3 = a3 - y,  delta2 = Theta2' delta3 .* g'(z2),
accumulators Delta(l) += delta(l+1) a(l)' over all m examples (one matrix product), and
    D = Delta/m + (lambda/m) Theta  (bias column: Delta/m alone),
full-batch gradient descent Theta <- Theta - alpha D. (The seed writes lambda Theta
without the 1/m, which is not the derivative of its own J; this follows J.) Prints one
JSON object: the training cost every 10 iterations, final train and test accuracy."""
import argparse
import json

import numpy as np

from common import cross_entropy, fashion, sigmoid


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--alpha", type=float, default=2.0)
    p.add_argument("--lmbda", type=float, default=1.0)
    p.add_argument("--limit", type=int, default=5000)
    a = p.parse_args()
    X, y, Xt, yt = fashion(a.limit)
    Y = np.eye(10)[y]
    m, sizes = len(X), [784, 25, 10]
    rng = np.random.default_rng(a.seed)
    eps = 0.12
    W = [rng.random((o, i)) * 2 * eps - eps for i, o in zip(sizes[:-1], sizes[1:])]
    b = [rng.random(o) * 2 * eps - eps for o in sizes[1:]]

    def forward(A):
        a2 = sigmoid(A @ W[0].T + b[0])
        return a2, sigmoid(a2 @ W[1].T + b[1])

    curve = []
    for it in range(a.iterations):
        a2, a3 = forward(X)
        if it % 10 == 0:
            curve.append({"iteration": it, "train_cost": cross_entropy(a3, Y)})
        d3 = a3 - Y
        d2 = (d3 @ W[1]) * a2 * (1 - a2)
        for l, (d, prev) in enumerate(((d2, X), (d3, a2))):
            W[l] = W[l] - a.alpha * ((d.T @ prev) / m + (a.lmbda / m) * W[l])
            b[l] = b[l] - a.alpha * d.sum(axis=0) / m
    a3 = forward(X)[1]
    curve.append({"iteration": a.iterations, "train_cost": cross_entropy(a3, Y)})
    print(json.dumps({"seed": a.seed, "curve": curve,
                      "train_accuracy": float(np.mean(np.argmax(a3, 1) == y)),
                      "test_accuracy": float(np.mean(np.argmax(forward(Xt)[1], 1) == yt))}))


if __name__ == "__main__":
    main()
