"""The driver of scripts/bench.sh: backprop and PyTorch side by side on W1-W3, written to
docs/benchmarks.md. Every number in that file comes from one run of this script."""
import argparse
import csv
import datetime
import math
import os
import platform
import re
import subprocess
import sys
import tempfile

FASHION = "/usr/share/datasets/fashion-mnist"
HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = {  # layers, hidden, output, batch, eta, lambda
    "W1": ([784, 30, 10], "sigmoid", "sigmoid", 10, 0.5, 5.0),
    "W2": ([784, 256, 256, 10], "relu", "softmax", 128, 0.1, 5.0),
    "W3": ([784, 2048, 2048, 10], "relu", "softmax", 256, 0.05, 5.0),
}
LAYOUTS = [(1, 1), (1, 2), (2, 1)]  # ranks, BLAS threads per rank
# Open MPI's shared-memory transport: on this VM its single-copy mode (CMA) moves 1 MB at
# 4.4 GB/s and copy-in/copy-out with larger fragments at 11 GB/s (docs/benchmarks.md).
MCA = ["--mca", "btl_vader_single_copy_mechanism", "none", "--mca", "btl_vader_max_send_size",
       "131072", "--mca", "btl_vader_eager_limit", "32768"]
N_TRAIN = 60000


def flops_per_example(layers):
    """2P forward + 2P weight gradients + 2(P - first layer's weights) input gradients."""
    weights = [a * b for a, b in zip(layers, layers[1:])]
    p = sum(weights)
    return 2 * p + 2 * p + 2 * (p - weights[0])


def run(cmd, env=None, timeout=3600):
    full = dict(os.environ, **(env or {}))
    out = subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    return out.stdout + out.stderr


def config(path, name, rundir, epochs):
    layers, hidden, output, batch, eta, lam = WORKLOADS[name]
    with open(path, "w") as f:
        f.write(f"""[data]
train = {FASHION}/train-images-idx3-ubyte.gz
train_labels = {FASHION}/train-labels-idx1-ubyte.gz
[network]
layers = {", ".join(map(str, layers))}
hidden = {hidden}
output = {output}
cost = cross_entropy
init = gaussian_scaled
[train]
epochs = {epochs}
batch_size = {batch}
learning_rate = {eta}
lambda = {lam}
seed = 1
[checkpoint]
dir = {rundir}
every_epochs = 0
[log]
metrics = {rundir}/metrics.csv
progress = off
""")


def backprop(args, name, ranks, threads, tmp, precision="float", gemm=None, any_scale=False):
    """samples/s over epochs 2.. (epoch 1 is the warm-up), peak RSS per rank, exchange %.
    gemm: BACKPROP_GEMM for the run (openblas, onednn), else the build's own choice.
    any_scale: [train] reproducible = any_scale, micro_batch half the batch."""
    sets = ["--set", f"train.threads={threads}", "--set", f"train.precision={precision}"]
    if any_scale:
        sets += ["--set", "train.reproducible=any_scale", "--set",
                 f"train.micro_batch={max(1, WORKLOADS[name][3] // 2)}"]

    def train(epochs, tag):
        tag = f"{tag}-{precision}-{gemm or 'auto'}{'-any' if any_scale else ''}"
        ini, rundir = f"{tmp}/{name}-{tag}.ini", f"{tmp}/{name}-{tag}"
        config(ini, name, rundir, epochs)
        bind = "core" if threads == 1 else "none"  # a rank's threads need cores of their own
        cmd = ["mpirun", "--oversubscribe", "--bind-to", bind, "-np", str(ranks)] + MCA + [
               "/usr/bin/time", "-f", "maxrss_kb %M", args.backprop, "train", ini] + sets
        out = run(cmd, {"BACKPROP_GEMM": gemm} if gemm else None)
        with open(f"{rundir}/metrics.csv") as f:
            rows = list(csv.DictReader(f))
        return out, rows

    _, rows = train(1, f"cal{ranks}x{threads}")  # calibration: how many epochs make SECONDS
    rate = float(rows[0]["samples_per_s"])
    epochs = 1 + max(1, math.ceil(args.seconds * rate / N_TRAIN))
    out, rows = train(epochs, f"{ranks}x{threads}")
    timed = rows[1:]
    seconds = sum(N_TRAIN / float(r["samples_per_s"]) for r in timed)
    # mpirun can drop a rank's last line of output at exit: then the RSS is unknown.
    rss = max((int(v) / 1024 for v in re.findall(r"maxrss_kb (\d+)", out)), default=None)
    kernel = re.search(r"OpenBLAS (\S+) kernel", out).group(1)
    libs = re.search(r"^BLAS: (.*?);", out, re.M).group(1)
    return dict(step_time(out), rate=N_TRAIN * len(timed) / seconds, seconds=seconds, rss_mb=rss,
                kernel=kernel, libs=libs, train_cost=[float(r["train_cost"]) for r in rows])


def step_time(out):
    """The trainer's "step time" line: ms per step on rank 0, by phase (epoch 1 included)."""
    line = re.search(r"^step time: .*$", out, re.M).group(0)
    value = lambda pattern: float(m.group(1)) if (m := re.search(pattern, line)) else None
    return {"step_ms": value(r"step time: ([0-9.]+) ms"), "compute_ms": value(r"compute ([0-9.]+)"),
            "slowest_ms": value(r"slowest rank ([0-9.]+)"),
            "allreduce_ms": value(r"exchange ([0-9.]+) \("), "allreduce": value(r"\(([0-9.]+)%\)"),
            "update_ms": value(r"update ([0-9.]+)")}


def torch_rate(args, name, threads, coretype, ddp=0, numpy=False, bf16=False):
    env = {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    cmd = [sys.executable, f"{HERE}/torch_train.py", name, str(threads), str(args.seconds)]
    cmd += ["--numpy"] if numpy else []
    cmd += ["--bf16"] if bf16 else []
    cmd += ["--ddp", str(ddp)] if ddp else []
    return float(re.search(r"samples_per_s ([0-9.]+)", run(cmd, env)).group(1))


def gemm_peak(args, threads, kernel, best):
    """Raises best[lib] to the 2048^3 sgemm of each library backprop uses, if higher."""
    for lib in ("openblas", "onednn"):
        env = {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
               "OPENBLAS_CORETYPE": kernel, "BENCH_GEMM": lib}
        got = float(run([args.gemm, "2", "n,n,2048,2048,2048"], env).split()[-1])
        best[lib] = max(best.get(lib, 0), got)


def machine():
    lscpu = run(["lscpu"])
    model = re.search(r"Model name:\s+(.*)", lscpu).group(1).strip()
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--backprop", required=True)
    p.add_argument("--gemm", required=True)
    p.add_argument("--allreduce", required=True)
    p.add_argument("--same-seed", nargs=2, metavar=("BEFORE", "PLAIN"),
                   help="backprop binaries: before the speed work, and this one without oneDNN")
    p.add_argument("--out", required=True)
    p.add_argument("--only", default="W1,W2,W3")
    p.add_argument("--bf16", action="store_true",
                   help="also [train] precision = bf16 and PyTorch's bf16 autocast, 1 x 1, "
                        "where the CPU has bf16 instructions (skipped, and said, where not)")
    args = p.parse_args()
    if args.bf16 and cpu_bf16() == "none":
        print("bf16: skipped, this CPU has neither amx_bf16 nor avx512_bf16", flush=True)
        args.bf16 = False
        args.bf16_skipped = True
    else:
        args.bf16_skipped = False
    default_kernel = os.environ.get("OPENBLAS_CORETYPE", "")
    results, torch, bf16, kernels, anys = {}, {}, {}, {}, {}
    # The peak is the best sgemm seen in the run, measured after each workload: a slow spell
    # of this shared machine lowers a peak measured in it as much as the training in it, and
    # the best of several is the conservative denominator.
    peaks = {1: {}, 2: {}}
    with tempfile.TemporaryDirectory() as tmp:
        # Each backprop run is followed at once by its PyTorch counterparts: a slow spell of
        # this shared machine then weighs on both sides of a ratio alike.
        for name in args.only.split(","):
            for ranks, threads in LAYOUTS:
                print(f"{name}: backprop {ranks} rank(s) x {threads} thread(s)", flush=True)
                r = results[name, ranks, threads] = backprop(args, name, ranks, threads, tmp)
                ddp = 2 if ranks == 2 else 0
                key = "ddp" if ddp else threads
                for label, core in (("default", default_kernel), ("same", r["kernel"])):
                    print(f"{name}: PyTorch {'DDP 2 x 1' if ddp else f'{threads} thread(s)'}, "
                          f"{label} kernel", flush=True)
                    torch[name, label, key] = torch_rate(args, name, 1 if ddp else threads, core, ddp)
                print(f"{name}: backprop {ranks} rank(s) x {threads} thread(s), any_scale", flush=True)
                anys[name, ranks, threads] = backprop(args, name, ranks, threads, tmp, any_scale=True)
            # The kernel choice (src/blas.c): the same 1 x 1 run with every large product
            # on each library, against the build's own choice measured above.
            if "oneDNN" in results[name, 1, 1]["libs"]:
                for gemm in ("openblas", "onednn"):
                    print(f"{name}: backprop 1 x 1, BACKPROP_GEMM={gemm}", flush=True)
                    kernels[name, gemm] = backprop(args, name, 1, 1, tmp, gemm=gemm)["rate"]
            if name == "W1":
                torch[name, "numpy", 1] = torch_rate(args, name, 1, default_kernel, numpy=True)
            if args.bf16:
                print(f"{name}: backprop and PyTorch in bf16, 1 rank x 1 thread", flush=True)
                bf16[name] = backprop(args, name, 1, 1, tmp, "bf16")
                torch[name, "bf16", 1] = torch_rate(args, name, 1, default_kernel, bf16=True)
            print(f"sgemm peak after {name}", flush=True)
            for threads in (1, 2):
                gemm_peak(args, threads, results[name, 1, 1]["kernel"], peaks[threads])
        kernel = results[next(iter(results))]["kernel"]
        allreduce = {label: allreduce_us(args, mca) for label, mca in (("default", []), ("tuned", MCA))}
        same = same_seed(args, tmp, default_kernel) if args.same_seed else None
        main_job = main_job_accuracy(args, tmp) if args.bf16 else None
        main_any = main_job_any_scale(args, tmp)
    extra = any_scale_lines(results, anys, main_any)
    extra += bf16_lines(results, bf16, torch, main_job) if args.bf16 else []
    write_report(args, results, torch, peaks, kernel, default_kernel, allreduce, same, kernels,
                 extra)


def main_job_accuracy(args, tmp):
    """configs/fashion-mnist.ini at 2 ranks in float and in bf16: final test accuracy and
    samples/s of the last epoch."""
    out = {}
    for precision in ("float", "bf16"):
        print(f"main job in {precision}", flush=True)
        rundir = f"{tmp}/main-{precision}"
        run(["mpirun", "--oversubscribe", "-np", "2"] + MCA + [
            args.backprop, "train", f"{HERE}/../configs/fashion-mnist.ini", "--set",
            f"checkpoint.dir={rundir}", "--set", f"train.precision={precision}", "--set",
            "log.progress=off"])
        with open(f"{rundir}/metrics.csv") as f:
            rows = list(csv.DictReader(f))
        out[precision] = (len(rows), float(rows[-1]["test_accuracy"]),
                          float(rows[-1]["samples_per_s"]))
    return out


def main_job_any_scale(args, tmp):
    """configs/fashion-mnist.ini at 2 ranks x 1 thread, 2 epochs, same_ranks and any_scale
    (micro_batch 32: one micro-shard a rank) alternating, 3 runs each: the median ms a step."""
    times = {"same_ranks": [], "any_scale": []}
    for i in range(3):
        for mode in times:
            print(f"main job, {mode}, run {i + 1} of 3", flush=True)
            rundir = f"{tmp}/main-{mode}-{i}"
            out = run(["mpirun", "--oversubscribe", "--bind-to", "core", "-np", "2"] + MCA + [
                args.backprop, "train", f"{HERE}/../configs/fashion-mnist.ini", "--set",
                f"checkpoint.dir={rundir}", "--set", "train.epochs=2", "--set", "train.threads=1",
                "--set", f"train.reproducible={mode}", "--set", "train.micro_batch=32", "--set",
                "log.progress=off", "--set", "checkpoint.every_epochs=0"])
            times[mode].append(step_time(out)["step_ms"])
    return {mode: sorted(t)[1] for mode, t in times.items()}


def any_scale_lines(results, anys, main_any):
    """The any_scale section of the report."""
    lines = ["", "## Same bits at any scale (`[train] reproducible = any_scale`)", "",
             "Each run right after its same_ranks counterpart above, `micro_batch` half the "
             "batch (W1 5, W2 64, W3 128: at most 2 ranks hold micro-shards); any_scale runs "
             "every product on one thread, whatever `threads` says (docs/reproducibility.md).",
             "", "| workload | ranks x threads | same_ranks samples/s | any_scale samples/s | "
             "any_scale / same_ranks | step ms same_ranks / any_scale |", "|---|---|---|---|---|---|"]
    for key, a in anys.items():
        r = results[key]
        lines.append(f"| {key[0]} | {key[1]} x {key[2]} | {r['rate']:,.0f} | {a['rate']:,.0f} | "
                     f"{a['rate'] / r['rate']:.2f}x | {r['step_ms']:.3f} / {a['step_ms']:.3f} |")
    s, a = main_any["same_ranks"], main_any["any_scale"]
    lines += ["", f"Main job (`configs/fashion-mnist.ini`, 2 ranks x 1 thread, 2 epochs, "
              f"`micro_batch = 32`), median of 3 alternating runs: {s:.3f} ms a step in "
              f"same_ranks, {a:.3f} in any_scale ({s / a:.2f}x).", ""]
    return lines


def bf16_lines(results, bf16, torch, main_job):
    """The bf16 section of the report."""
    lines = ["", "## bf16 (`[train] precision = bf16`)", "",
             f"Same run, 1 rank x 1 thread, the CPU's bf16: {cpu_bf16()}. PyTorch in bf16 is "
             "its CPU autocast to bfloat16 (forward and loss; torch_train.py --bf16).", "",
             "| workload | backprop float samples/s | backprop bf16 | bf16 / float | "
             "PyTorch float (default kernel) | PyTorch bf16 autocast | backprop bf16 / PyTorch bf16 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in bf16.items():
        f, tf, tb = results[name, 1, 1]["rate"], torch[name, "default", 1], torch[name, "bf16", 1]
        lines.append(f"| {name} | {f:,.0f} | {r['rate']:,.0f} | {r['rate'] / f:.2f}x | "
                     f"{tf:,.0f} | {tb:,.0f} | {r['rate'] / tb:.2f}x |")
    (ef, af, sf), (eb, ab, sb) = main_job["float"], main_job["bf16"]
    lines += ["", f"Main job (`configs/fashion-mnist.ini`, 2 ranks, {ef} epochs): final test "
              f"accuracy {100 * af:.2f} % in float, {100 * ab:.2f} % in bf16 "
              f"({100 * (ab - af):+.2f} points); last epoch {sf:,.0f} and {sb:,.0f} samples/s.",
              ""]
    return lines


def cpu_bf16():
    flags = open("/proc/cpuinfo").read()
    have = [f for f in ("amx_bf16", "avx512_bf16") if re.search(rf"\b{f}\b", flags)]
    return ", ".join(have) if have else "none"


def same_seed(args, tmp, default_kernel):
    """W2, 2 epochs, seed 1, at 1 and 2 ranks: the metrics of the build before the speed
    work, of this build without oneDNN on the same OpenBLAS kernel, and of this build as it
    runs by default. Returns {ranks: (plain == before, the default's largest relative
    difference from before, before's and the default's last row: epoch, step, cost,
    accuracy)}."""
    before, plain = args.same_seed
    core = default_kernel or "Haswell"
    out = {}
    for ranks in (1, 2):
        metrics = {}
        for tag, binary, env in (("before", before, {}), ("plain", plain, {"BACKPROP_BLAS_KERNEL": "keep"}),
                                 ("default", args.backprop, {})):
            ini, rundir = f"{tmp}/same-{tag}-{ranks}.ini", f"{tmp}/same-{tag}-{ranks}"
            config(ini, "W2", rundir, 2)
            env = dict(env, OPENBLAS_CORETYPE=core) if tag != "default" else env
            print(f"same seed: {tag} build, {ranks} rank(s)", flush=True)
            run(["mpirun", "--oversubscribe", "-np", str(ranks)] +
                [a for k in env for a in ("-x", k)] + [binary, "train", ini, "--set", "train.threads=1"],
                env)
            with open(f"{rundir}/metrics.csv") as f:
                metrics[tag] = [line.split(",")[:8] for line in f.read().splitlines()[1:]]
        rel = max(abs(float(a) - float(b)) / abs(float(b))
                  for ra, rb in zip(metrics["default"], metrics["before"])
                  for a, b in zip(ra[2:], rb[2:]) if a and b)
        out[ranks] = (metrics["plain"] == metrics["before"], rel, metrics["before"][-1][:4],
                      metrics["default"][-1][:4])
    return out


def allreduce_us(args, mca):
    out = run(["mpirun", "--oversubscribe", "--bind-to", "core", "-np", "2"] + mca + [args.allreduce])
    return [float(line.split()[1]) for line in out.splitlines() if re.match(r"^\d+ [0-9.]+$", line)]


def write_report(args, results, torch, peaks, kernel, default_kernel, allreduce, same, kernels,
                 extra):
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.date.today()} on {machine()} by `scripts/bench.sh "
        f"{args.seconds:g}` (one run; every figure below comes from it, but for the Data "
        "placement section at the end, which scripts/bench-data.sh writes).",
        "",
        f"- backprop: OpenBLAS **{kernel}** kernel (its own choice, see docs/running.md); PyTorch "
        f"{torch_version()} on the same OpenBLAS, with its default kernel "
        f"(`OPENBLAS_CORETYPE={default_kernel or 'unset'}` here) and with {kernel}.",
        f"- sgemm peak, 2048x2048x2048, the best of the tries after each workload: "
        f"OpenBLAS {kernel} {peaks[1]['openblas']:.0f} / oneDNN {peaks[1]['onednn']:.0f} "
        f"GFLOP/s on 1 thread, {peaks[2]['openblas']:.0f} / {peaks[2]['onednn']:.0f} on 2; "
        "'% of sgemm peak' divides by the better of the two.",
        f"- mpirun options for backprop: `{' '.join(MCA)}` (see docs/running.md, Running on a cluster).",
        f"- samples/s over >= {args.seconds:g} s of training after a warm-up (backprop: all "
        "epochs after the first; PyTorch: after 2 s), Fashion-MNIST's 60000 training images.",
        "- GFLOP/s counts 2P forward + 2P weight-gradient + 2(P - first layer's weights) "
        "input-gradient flops per example, P = weights.",
        "",
        "| workload | ranks x threads | backprop samples/s | GFLOP/s | % of sgemm peak | peak RSS/rank | exchange % of step | PyTorch (default kernel) | PyTorch (same kernel) | ours / default | ours / same |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, ranks, threads), r in results.items():
        layers = WORKLOADS[name][0]
        gflops = r["rate"] * flops_per_example(layers) / 1e9
        peak = max(peaks[ranks * threads].values())
        key = "ddp" if ranks == 2 else threads
        tdef, tsame = torch[name, "default", key], torch[name, "same", key]
        share = f"{r['allreduce']:.1f}" if r["allreduce"] is not None else "-"
        rss = f"{r['rss_mb']:.0f} MB" if r["rss_mb"] is not None else "?"
        label = "DDP " if ranks == 2 else ""
        lines.append(
            f"| {name} | {ranks} x {threads} | {r['rate']:,.0f} | {gflops:.1f} | "
            f"{100 * gflops / peak:.0f} % | {rss} | {share} | "
            f"{label}{tdef:,.0f} | {label}{tsame:,.0f} | {r['rate'] / tdef:.2f} | "
            f"{r['rate'] / tsame:.2f} |")
    if kernels:
        lines += ["", "Which library runs the large products (src/blas.c chooses by CPU family: "
                  "oneDNN where the CPU has AVX-512, OpenBLAS where it has only AVX2; "
                  "`BACKPROP_GEMM=openblas` or `=onednn` forces one). 1 rank x 1 thread, "
                  f"samples/s, this CPU: {results[next(iter(results))]['libs']}:", "",
                  "| workload | default | all on OpenBLAS | large on oneDNN | default / best | "
                  "default / PyTorch (default kernel) |", "|---|---|---|---|---|---|"]
        for name in dict.fromkeys(k[0] for k in kernels):
            d = results[name, 1, 1]["rate"]
            ob, od = kernels[name, "openblas"], kernels[name, "onednn"]
            lines.append(f"| {name} | {d:,.0f} | {ob:,.0f} | {od:,.0f} | {d / max(d, ob, od):.2f} | "
                         f"{d / torch[name, 'default', 1]:.2f} |")
    if args.bf16_skipped:
        lines += ["", "bf16: not measured, this CPU has no bf16 instructions (neither "
                  "amx_bf16 nor avx512_bf16)."]
    lines += ["", "Where a step's time goes: milliseconds per step on rank 0, over the whole run "
              "(the trainer's `step time` line, warm-up epoch included; the exchange is the "
              "part the step waited for, waiting for the slower rank included; on one node "
              "the ranks sum each other's buffers in shared memory, src/exchange.c):", "",
              "| workload | ranks x threads | step | compute (slowest rank) | exchange | update |",
              "|---|---|---|---|---|---|"]
    for (name, ranks, threads), r in results.items():
        slowest = f" ({r['slowest_ms']:.3f})" if r["slowest_ms"] is not None else ""
        reduce = (f"{r['allreduce_ms']:.3f} ({r['allreduce']:.1f} %)"
                  if r["allreduce_ms"] is not None else "-")
        lines.append(f"| {name} | {ranks} x {threads} | {r['step_ms']:.3f} | "
                     f"{r['compute_ms']:.3f}{slowest} | {reduce} | {r['update_ms']:.3f} |")
    lines += ["", "Scaling at 2 ranks x 1 thread against 1 rank x 1 thread, and what it would "
              "be if the exchange took no time (1-rank step / (slowest rank's compute + "
              "update) at 2 ranks):", ""]
    for name in dict.fromkeys(k[0] for k in results):
        one, two = results[name, 1, 1], results[name, 2, 1]
        bound = one["step_ms"] / (two["slowest_ms"] + two["update_ms"])
        lines.append(f"- {name}: {two['rate'] / one['rate']:.2f}x; with a free exchange "
                     f"{bound:.2f}x")
    lines += ["", "For comparison, MPI_Allreduce of the packed gradient buffer (what a step "
              "used before the shared-memory exchange), 2 ranks on this machine "
              "(bench/allreduce.c), microseconds:", "",
              "| buffer | Open MPI defaults | with the mpirun options above |", "|---|---|---|"]
    for i, name in enumerate(("W1", "W2", "W3")):
        lines.append(f"| {name} | {allreduce['default'][i]:.0f} | {allreduce['tuned'][i]:.0f} |")
    if ("W1", "numpy", 1) in torch:
        w1 = results["W1", 1, 1]["rate"]
        np_rate = torch["W1", "numpy", 1]
        lines += ["", f"W1 against a vectorised numpy version of the same net (1 thread): "
                  f"{np_rate:,.0f} samples/s; backprop is {w1 / np_rate:.2f}x that."]
    if same:
        lines += ["", "Same seed, same metrics: W2, 2 epochs, seed 1. The build before the speed "
                  "work (commit 86984ce) against this one, 1 BLAS thread per rank, built without oneDNN "
                  "(`-DBACKPROP_ONEDNN=OFF`) on the same OpenBLAS kernel "
                  "(`BACKPROP_BLAS_KERNEL=keep`), and against this one as it runs by default "
                  f"(oneDNN for the large products, the {kernel} kernel):", ""]
        for ranks, (identical, rel, before, default) in same.items():
            lines.append(f"- {ranks} rank(s): same products: metrics "
                         f"{'byte-identical' if identical else 'DIFFER'}; default: largest "
                         f"relative difference {rel:.1e} (epoch 2 train cost {before[2]} before, "
                         f"{default[2]} now; accuracy {before[3]} / {default[3]})")
        lines += ["", "The default differs because float addition is not associative: oneDNN "
                  "and the AVX-512 kernel split each product's sums into other partial sums "
                  "than the Haswell kernel, the last bit of some gradients changes, and "
                  "training carries that forward. The arithmetic is the same: with the same "
                  "products the metrics are identical to the byte."]
    lines += ["", "Workloads: W1 [784,30,10] sigmoid/sigmoid cross-entropy, batch 10, eta 0.5, "
              "lambda 5; W2 [784,256,256,10] relu/softmax, batch 128, eta 0.1, lambda 5; "
              "W3 [784,2048,2048,10] relu/softmax, batch 256, eta 0.05, lambda 5.", ""]
    lines += extra  # the bf16 section, before bench-data.sh's
    # scripts/bench-data.sh's section (data placement) is its own, kept as it is.
    kept = ""
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = f.read()
        at = old.find("\n## Data placement")
        kept = old[at:] if at >= 0 else ""
        if "\n## bf16" in kept:  # an older layout put this script's bf16 section there
            kept = kept[:kept.find("\n## bf16")].rstrip("\n") + "\n"
    with open(args.out, "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n" + kept)
    print("\n".join(lines))


def torch_version():
    try:
        return run([sys.executable, "-c", "import torch; print(torch.__version__)"]).strip()
    except SystemExit:
        return "?"


if __name__ == "__main__":
    main()
