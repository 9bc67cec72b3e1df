"""backprop against scikit-learn's MLPClassifier, solver by solver: the same network,
data, L2 term, solver, batch and epochs, one after the other on this machine.

usage: sklearn_compare.py BACKPROP OUTDIR [REPS]

Fashion-MNIST (Debian's dataset-fashion-mnist): the first N_TRAIN training images, the
10000 test images, pixels / 255 in float32 (MLPClassifier keeps float32; backprop's
default build computes in float). Network 784-100-10, relu hidden units, softmax outputs
with the log-likelihood cost, Glorot-uniform initial weights (sklearn's; backprop's
init = xavier).

How the two spell the same run:
- L2: sklearn adds alpha/(2 B) sum W^2 to each batch's mean loss (B the batch's size);
  backprop adds lambda/(2 n) sum W^2 to the mean cost (n the training set's size). Same
  gradient when lambda = alpha n / B; full batch (lbfgs): lambda = alpha.
- sgd: classical momentum (nesterovs_momentum=False), constant rate. adam: the L2 term
  coupled to the gradient (backprop's weight_decay = coupled), beta 0.9/0.999, eps 1e-8.
- lbfgs: sklearn's max_iter counts L-BFGS iterations, as backprop's epochs do under lbfgs
  (history 10 both). Both may stop before: on their gradient tolerance (tol here,
  lbfgs_tolerance there); scipy's L-BFGS-B also on a relative decrease below 2.2e-9, backprop
  when a line search finds no lower cost. The table gives the iterations each ran, and
  backprop's time counts as faster only if it ran at least as many. scipy works on float64
  copies of the weights, so sklearn's lbfgs computes in float64 (its data stay float32).
- sklearn's own early stop (no improvement for n_iter_no_change epochs) is off.

Time: sklearn's fit() alone against backprop's training alone (the run's elapsed_s in
metrics.csv: from the first step to the last, after the data are in memory); the table
also gives backprop's whole train command (start-up, reading and decoding the gzip files
of all 60000 images, training, the final checkpoint). backprop runs 1 rank with
threads = auto (2 here). Both use all the
cores: numpy's OpenBLAS takes them, and OPENBLAS_NUM_THREADS is left alone. Accuracy: on
the test set after training, sklearn's score() and backprop's eval. Each of REPS
repetitions (default 1) runs every configuration once, the two programs alternating; the
table gives medians.

Prints a markdown table and exits 1 unless, for every solver, the two final accuracies are
within 1 point and backprop took less time.
"""
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds"))
from common import FASHION, fashion  # noqa: E402

N_TRAIN = 20000
HIDDEN = 100
ALPHA = 1e-4
RUNS = {  # solver: batch, learning rate, epochs (iterations for lbfgs)
    "sgd": (64, 0.02, 10),
    "adam": (64, 0.001, 10),
    "lbfgs": (N_TRAIN, None, 150),
}
TOL = 1e-5


def sklearn_run(solver, X, y, Xt, yt, seed):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    batch, lr, epochs = RUNS[solver]
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), activation="relu", solver=solver,
                        alpha=ALPHA, batch_size=batch, learning_rate="constant",
                        learning_rate_init=lr or 0.001, max_iter=epochs, shuffle=True,
                        random_state=seed, tol=TOL, momentum=0.9, nesterovs_momentum=False,
                        early_stopping=False, n_iter_no_change=epochs + 1, max_fun=10**9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter reached: expected
        began = time.perf_counter()
        clf.fit(X, y)
        took = time.perf_counter() - began
    return {"seconds": took, "accuracy": clf.score(Xt, yt), "iterations": clf.n_iter_,
            "loss": float(clf.loss_)}


def backprop_run(binary, outdir, solver, seed):
    batch, lr, epochs = RUNS[solver]
    lam = ALPHA * N_TRAIN / batch
    d = os.path.join(outdir, f"{solver}-{seed}")
    ini = os.path.join(outdir, f"{solver}.ini")
    with open(ini, "w") as f:
        f.write(f"""[data]
train = {FASHION}/train-images-idx3-ubyte.gz
train_labels = {FASHION}/train-labels-idx1-ubyte.gz
limit = {N_TRAIN}
[network]
layers = 784, {HIDDEN}, 10
hidden = relu
output = softmax
cost = cross_entropy
init = xavier
[train]
epochs = {epochs}
batch_size = {batch}
lambda = {lam!r}
optimizer = {solver}
{'' if lr is None else f'learning_rate = {lr!r}'}
{'momentum = 0.9' if solver == 'sgd' else ''}
lbfgs_tolerance = {TOL!r}
[checkpoint]
every_epochs = 0
[log]
progress = off
""")
    subprocess.run(["rm", "-rf", d], check=True)
    began = time.perf_counter()
    subprocess.run([binary, "train", ini, "--set", f"checkpoint.dir={d}",
                    "--set", f"train.seed={seed}"], check=True, stdout=subprocess.DEVNULL)
    took = time.perf_counter() - began
    out = subprocess.run([binary, "eval", "--checkpoint", f"{d}/latest.h5", "--data",
                          f"{FASHION}/t10k-images-idx3-ubyte.gz", "--labels",
                          f"{FASHION}/t10k-labels-idx1-ubyte.gz", "--json"],
                         check=True, capture_output=True, text=True).stdout
    with open(f"{d}/metrics.csv") as f:
        rows = f.read().splitlines()
    last = rows[-1].split(",")
    return {"seconds": float(last[9]), "command_s": took, "accuracy": json.loads(out)["accuracy"],
            "iterations": int(last[0]), "loss": float(last[2])}


def main(argv):
    binary, outdir = argv[1], argv[2]
    reps = int(argv[3]) if len(argv) > 3 else 1
    X, y, Xt, yt = fashion(N_TRAIN)
    X, Xt = X.astype(np.float32), Xt.astype(np.float32)
    results = {s: {"backprop": [], "sklearn": []} for s in RUNS}
    for rep in range(reps):
        for solver in RUNS:
            seed = rep + 1
            results[solver]["backprop"].append(backprop_run(binary, outdir, solver, seed))
            results[solver]["sklearn"].append(sklearn_run(solver, X, y, Xt, yt, seed))
            for who in ("backprop", "sklearn"):
                r = results[solver][who][-1]
                print(f"# rep {rep + 1} {solver:5} {who:8} {r['seconds']:7.2f} s  "
                      f"accuracy {100 * r['accuracy']:.2f} %  {r['iterations']} "
                      f"{'iterations' if solver == 'lbfgs' else 'epochs'}  "
                      f"train loss {r['loss']:.4f}", flush=True)
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    import sklearn
    print(f"\n| solver | batch | epochs or iterations, backprop / sklearn | backprop accuracy "
          f"| sklearn {sklearn.__version__} accuracy | backprop training s (whole command) | "
          f"sklearn fit s | sklearn / backprop |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for solver, (batch, lr, epochs) in RUNS.items():
        b, s = results[solver]["backprop"], results[solver]["sklearn"]
        ab, as_ = 100 * med(b, "accuracy"), 100 * med(s, "accuracy")
        tb, ts = med(b, "seconds"), med(s, "seconds")
        ib, is_ = med(b, "iterations"), med(s, "iterations")
        what = f"{batch}" if solver != "lbfgs" else f"all {N_TRAIN}"
        print(f"| {solver} | {what} | {ib:.0f} / {is_:.0f} | {ab:.2f} % | {as_:.2f} % | {tb:.2f} "
              f"({med(b, 'command_s'):.2f}) | {ts:.2f} | {ts / tb:.2f}x |")
        if abs(ab - as_) > 1 or tb >= ts or ib < is_:
            ok = False
            print(f"# {solver}: FAIL (accuracies {ab:.2f} vs {as_:.2f} %, "
                  f"{tb:.1f} vs {ts:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
