"""The benchmark workloads trained with PyTorch (and W1 with plain numpy), measured the way
scripts/bench.sh measures backprop: samples/s over at least SECONDS of training after a
warm-up, same network, data, batch, update rule (SGD, L2 on weights only as weight decay
lambda/n) and thread count.

usage: torch_train.py WORKLOAD THREADS SECONDS [--numpy] [--ddp RANKS] [--batch B] [--bf16]
       torch_train.py WORKLOAD THREADS SECONDS --rank R --world N [--batch B]
Run with OPENBLAS_NUM_THREADS=THREADS (torch.set_num_threads does not bound OpenBLAS's
own threads). --ddp starts RANKS processes here; --rank is one process of a DDP job started
elsewhere (scripts/bench-cluster.sh: one per simulated host, MASTER_ADDR and MASTER_PORT
in the environment). --batch replaces the workload's global batch. --bf16 runs the forward
pass and the loss under CPU autocast to bfloat16 (PyTorch's one-line mixed precision; the
backward follows the autocast ops, the weights and SGD stay float32). Rank 0 prints one line:
"samples_per_s N".
"""
import gzip
import os
import sys
import time

import numpy as np

WORKLOADS = {  # layers, hidden, output, batch, eta, lambda
    "W1": ([784, 30, 10], "sigmoid", "sigmoid", 10, 0.5, 5.0),
    "W2": ([784, 256, 256, 10], "relu", "softmax", 128, 0.1, 5.0),
    "W3": ([784, 2048, 2048, 10], "relu", "softmax", 256, 0.05, 5.0),
}
DATA = "/usr/share/datasets/fashion-mnist"
BATCH = None  # --batch
BF16 = False  # --bf16


def load():
    with gzip.open(f"{DATA}/train-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255
    with gzip.open(f"{DATA}/train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return X, y


def timed(step, n, batch, seconds, seed, agree=lambda stop: stop):
    """Runs epochs of steps; returns samples/s over >= seconds after a 2 s warm-up.
    agree(flag) makes the ranks of a DDP run decide together, every 20 steps, when the
    warm-up ends and when to stop (each rank calls it at the same steps, warm or not)."""
    rng = np.random.default_rng(seed)
    done, start, warm, steps = 0, time.perf_counter(), None, 0
    while True:
        perm = rng.permutation(n)
        for s in range(0, n, batch):
            step(perm[s:s + batch])
            steps += 1
            now = time.perf_counter()
            if warm is not None:
                done += min(batch, n - s)
            if steps % 20:
                continue
            if warm is None:
                if agree(now - start >= 2):
                    warm, done = now, 0
            elif agree(now - warm >= seconds):
                return done / (now - warm)


def numpy_w1(X, y, seconds):
    """Nielsen's network, vectorised over the mini-batch with numpy."""
    layers, _, _, batch, eta, lam = WORKLOADS["W1"]
    rng = np.random.default_rng(1)
    W = [rng.standard_normal((o, i)).astype(np.float32) / np.sqrt(i) for i, o in zip(layers, layers[1:])]
    b = [rng.standard_normal(o).astype(np.float32) for o in layers[1:]]
    Y = np.eye(10, dtype=np.float32)[y]
    n = len(X)
    sig = lambda z: 1 / (1 + np.exp(-z))

    def step(idx):
        a0 = X[idx]
        a1 = sig(a0 @ W[0].T + b[0])
        a2 = sig(a1 @ W[1].T + b[1])
        d2 = a2 - Y[idx]
        d1 = (d2 @ W[1]) * a1 * (1 - a1)
        m = len(idx)
        for l, (d, a) in enumerate(((d1, a0), (d2, a1))):
            W[l] *= 1 - eta * lam / n
            W[l] -= (eta / m) * (d.T @ a)
            b[l] -= (eta / m) * d.sum(0)

    return timed(step, n, batch, seconds, 1)


def torch_model(name):
    import torch
    layers, hidden, output, batch, eta, lam = WORKLOADS[name]
    batch = BATCH or batch
    act = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}[hidden]
    mods = []
    for i, (a, b) in enumerate(zip(layers, layers[1:])):
        mods.append(torch.nn.Linear(a, b))
        if i < len(layers) - 2:
            mods.append(act())
    return torch.nn.Sequential(*mods), output, batch, eta, lam


def torch_run(name, X, y, seconds, rank=0, world=1):
    import torch
    torch.manual_seed(1)
    model, output, batch, eta, lam = torch_model(name)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    n = len(X)
    weights = [p for p in model.parameters() if p.dim() == 2]
    biases = [p for p in model.parameters() if p.dim() == 1]
    # L2 on weights only: weight decay lambda/n gives W <- (1 - eta lambda/n) W - eta g.
    opt = torch.optim.SGD([{"params": weights, "weight_decay": lam / n},
                           {"params": biases, "weight_decay": 0.0}], lr=eta)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    onehot = torch.nn.functional.one_hot(yt, 10).float()

    def step(idx):
        lo, hi = len(idx) * rank // world, len(idx) * (rank + 1) // world
        rows = torch.from_numpy(idx[lo:hi])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
            logits = model(Xt.index_select(0, rows))
        logits = logits.float()
        if output == "softmax":
            loss = torch.nn.functional.cross_entropy(logits, yt.index_select(0, rows))
        else:  # sigmoid outputs, per-unit binary cross-entropy summed over units
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, onehot.index_select(0, rows), reduction="sum") / len(rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    agree = lambda stop: stop
    if world > 1:
        import torch.distributed as dist

        def agree(stop):
            flag = torch.tensor([1.0 if stop else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item())
    return timed(step, n, batch, seconds, 1, agree)


def ddp_worker(rank, world, name, threads, seconds, queue):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    X, y = load()
    rate = torch_run(name, X, y, seconds, rank, world)
    if rank == 0:
        queue.put(rate)
    dist.destroy_process_group()


def main(argv):
    global BATCH, BF16
    name, threads, seconds = argv[1], int(argv[2]), float(argv[3])
    BF16 = "--bf16" in argv
    if "--batch" in argv:
        BATCH = int(argv[argv.index("--batch") + 1])
    if "--rank" in argv:
        import torch
        import torch.distributed as dist
        rank, world = int(argv[argv.index("--rank") + 1]), int(argv[argv.index("--world") + 1])
        torch.set_num_threads(threads)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        X, y = load()
        rate = torch_run(name, X, y, seconds, rank, world)
        dist.destroy_process_group()
        if rank == 0:
            print(f"samples_per_s {rate:.1f}")
        return
    if "--numpy" in argv:
        X, y = load()
        rate = numpy_w1(X, y, seconds)
    elif "--ddp" in argv:
        import torch.multiprocessing as mp
        world = int(argv[argv.index("--ddp") + 1])
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        queue = mp.get_context("spawn").SimpleQueue()
        mp.spawn(ddp_worker, args=(world, name, threads, seconds, queue), nprocs=world)
        rate = queue.get()
    else:
        import torch
        torch.set_num_threads(threads)
        X, y = load()
        rate = torch_run(name, X, y, seconds)
    print(f"samples_per_s {rate:.1f}")


if __name__ == "__main__":
    main(sys.argv)
