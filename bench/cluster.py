"""The driver of scripts/bench-cluster.sh: backprop (overlap on and off) and PyTorch DDP (gloo)
trained across 1, 2 and 3 simulated hosts (network namespaces, scripts/cluster.sh) on links
limited with tbf, and a model of the step time checked against those runs; writes
docs/scaling.md. Needs root. Not part of the tests.

usage: cluster.py --backprop BIN --allreduce BIN --json RAW --out FILE [--report]
(--report: only rewrite FILE from RAW, the raw results an earlier run saved)
"""
import argparse
import csv
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "..", "scripts", "cluster.sh")
FASHION = "/usr/share/datasets/fashion-mnist"
NET = "10.213.7"
CORES = os.cpu_count()
# name: layers, global batch, eta, examples per epoch (data.limit: a few dozen steps)
WORKLOADS = {
    "W1": ([784, 30, 10], 10, 0.5, 5000),
    "W2": ([784, 256, 256, 10], 128, 0.1, 12800),
    "W3": ([784, 2048, 2048, 10], 256, 0.05, 5120),
    # W3's net with 4x the batch: 4x the compute per byte exchanged, so that on a 2 Gbit/s
    # link the exchange takes about as long as the backward pass.
    "W3b1024": ([784, 2048, 2048, 10], 1024, 0.05, 20480),
}
TORCH_NAME = {"W1": "W1", "W2": "W2", "W3": "W3", "W3b1024": "W3"}
RATES = ["4gbit", "1gbit"]
UNLIMITED = "unlimited"  # links without tbf: the exchange as fast as this machine's CPU moves it
MATCHED = ("W3b1024", "2gbit")  # the overlap experiment: exchange ~ backward pass
BURST = 256 * 1024  # scripts/cluster.sh's tbf burst (256kb)
TCP_PAYLOAD = 1448 / 1514  # bytes of data per byte on the wire (1500 MTU, TCP timestamps)
BLOCK = 1 << 18  # src/net.c BP_GRAD_BLOCK
BUCKET_MB = 4.0  # [comm] bucket_mb default
SWEEP_MB = [0.5, 1, 2, 4, 8, 16, 32]
ALGORITHMS = ("1 basic linear, 2 nonoverlapping (reduce then broadcast), 3 recursive "
              "doubling, 4 ring, 5 segmented ring, 6 Rabenseifner (Open MPI 4.1)")


def run(cmd, env=None, timeout=900):
    e = dict(os.environ, **(env or {}))
    p = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"bench-cluster: {' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}")
    return p.stdout


def rate_bits(rate):
    return float(rate[:-4]) * 1e9 if rate and rate != UNLIMITED else math.inf


# ---- the runs ----

def config(path, name, rundir, batch=None):
    layers, full, eta, limit = WORKLOADS[name]
    batch = batch or full
    limit = limit * batch // full
    with open(path, "w") as f:
        f.write(f"""[data]
train = {FASHION}/train-images-idx3-ubyte.gz
train_labels = {FASHION}/train-labels-idx1-ubyte.gz
limit = {limit}
[network]
layers = {", ".join(map(str, layers))}
hidden = {"sigmoid" if name == "W1" else "relu"}
output = {"sigmoid" if name == "W1" else "softmax"}
cost = cross_entropy
init = gaussian_scaled
[train]
epochs = 2
batch_size = {batch}
learning_rate = {eta}
lambda = 5
seed = 1
threads = 1
[checkpoint]
dir = {rundir}
every_epochs = 0
[log]
progress = off
""")


def step_time(out):
    line = re.search(r"^step time: .*$", out, re.M).group(0)
    value = lambda pattern: float(m.group(1)) if (m := re.search(pattern, line)) else 0.0
    # the model's compute is the rank's own work before the exchange: its rows and the passes
    return {"step": value(r"step time: ([0-9.]+) ms"),
            "compute": value(r"= data ([0-9.]+)") + value(r"compute ([0-9.]+)"),
            "exposed": value(r"exchange ([0-9.]+) \("), "update": value(r"update ([0-9.]+)"),
            "hidden": value(r"([0-9.]+) of it hidden")}


def tx_bytes(hosts):
    total = 0
    for h in range(1, hosts + 1):
        out = run(["ip", "-n", f"bp-host{h}", "-s", "link", "show", "eth0"])
        total += int(out.split("TX:")[1].split("\n")[1].split()[0])
    return total


def backprop(args, name, hosts, overlap, tmp, rate="", bucket_mb=BUCKET_MB, batch=None):
    tag = f"{name}-{hosts}-{rate}-{overlap}-{bucket_mb}-{batch}"
    ini, rundir = f"{tmp}/{tag}.ini", f"{tmp}/{tag}"
    config(ini, name, rundir, batch)
    cmd = [args.backprop, "train", ini, "--set", f"comm.overlap={'true' if overlap else 'false'}",
           "--set", f"comm.bucket_mb={bucket_mb}"]
    before = tx_bytes(hosts) if hosts > 1 else 0
    if hosts > 1:
        out = run([CLUSTER, "run", "-np", str(hosts), "--", "--bind-to", "none"] + cmd)
    else:
        out = run(cmd)
    sent = tx_bytes(hosts) - before if hosts > 1 else 0
    with open(f"{rundir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    r = step_time(out)
    steps = int(rows[-1]["step"])
    r.update(rate=float(rows[-1]["samples_per_s"]), bytes_per_step=sent / steps / hosts,
             cost=rows[-1]["train_cost"])
    return r


def ddp(args, name, hosts, seconds):
    torch_name, batch = TORCH_NAME[name], WORKLOADS[name][1]
    base = [sys.executable, f"{HERE}/torch_train.py", torch_name, "1", str(seconds), "--batch",
            str(batch)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if hosts == 1:
        out = run(base, env)
    else:
        env.update(MASTER_ADDR=f"{NET}.1", MASTER_PORT="29517", GLOO_SOCKET_IFNAME="eth0")
        procs = []
        for h in range(hosts):
            cmd = ["ip", "netns", "exec", f"bp-host{h + 1}"] + base + ["--rank", str(h), "--world",
                                                                        str(hosts)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        outs = [p.communicate(timeout=600)[0] for p in procs]
        if any(p.returncode for p in procs):
            sys.exit("bench-cluster: DDP failed:\n" + "\n".join(o[-2000:] for o in outs))
        out = outs[0]
    return float(re.search(r"samples_per_s ([0-9.]+)", out).group(1))


def mpi_allreduce(args, hosts, algorithm=0):
    """Open MPI's MPI_Allreduce of W3's buffer and the bytes each host sent per call;
    algorithm > 0 forces one of coll_tuned's (0: its own choice)."""
    force = ["--mca", "coll_tuned_use_dynamic_rules", "1", "--mca",
             "coll_tuned_allreduce_algorithm", str(algorithm)] if algorithm else []
    before = tx_bytes(hosts)
    out = run([CLUSTER, "run", "-np", str(hosts), "--", "--bind-to", "none"] + force +
              [args.allreduce, "2"])
    floats, us = out.split()[-2:]
    calls = 10 + 30  # warm-up + timed, bench/allreduce.c
    return float(us) / 1e3, (tx_bytes(hosts) - before) / calls / hosts, int(floats)


def duplex(rate):
    """Gbit/s of TCP data one way, and each way with both at once, host 1 to host 2."""
    got = {}
    for mode in ("one", "both"):
        server = subprocess.Popen(["ip", "netns", "exec", "bp-host2", sys.executable,
                                   f"{HERE}/tcp_duplex.py", "server"])
        out = run(["ip", "netns", "exec", "bp-host1", sys.executable, f"{HERE}/tcp_duplex.py",
                   mode, f"{NET}.2"])
        server.wait(timeout=60)
        got[mode] = float(out.split()[-1])
    return got


def up(hosts, rate):
    cmd = [CLUSTER, "up", str(hosts)] + (["--rate", rate] if rate else [])
    run(cmd)


# ---- the model ----

def offsets(layers):
    offs, at = [], 0
    for a, b in zip(layers, layers[1:]):
        offs.append(at)
        at += a * b + b
    return offs, at + 2


def backward_events(layers):
    """(fraction of the step's compute done, buffer offset final) after each row block, and the
    forward's share; src/net.c's order, timed by multiply-adds."""
    offs, _ = offsets(layers)
    pairs = list(zip(layers, layers[1:]))
    work = sum(a * b for a, b in pairs) * 2 + sum(a * b for a, b in pairs[1:])
    t, events = sum(a * b for a, b in pairs) / work, []
    for l in range(len(pairs) - 1, -1, -1):
        n_in, n_out = pairs[l]
        blocks = math.ceil(n_in * n_out / BLOCK)
        rows = math.ceil(n_out / blocks)
        hi = n_out
        while hi > 0:
            lo = (hi - 1) // rows * rows
            t += (hi - lo) * n_in / work
            events.append((t, offs[l] + lo * n_in))
            hi = lo
        if l > 0:
            t += n_in * n_out / work
    return events


def buckets(layers, overlap=True, mb=BUCKET_MB):
    """src/exchange.c cut_buckets: [(lo, hi)] from the end of the buffer."""
    offs, n = offsets(layers)
    if not overlap or n * 4 <= mb * 1e6:
        return [(0, n)]
    out, hi, lo = [], n, n
    for _, at in backward_events(layers):
        if ((hi - at) * 4 > mb * 1e6 or at == 0) and lo < hi:
            out.append((lo, hi))
            hi = lo
        lo = at
    out.append((0, hi))
    return out


def exchange_ms(reals, nodes, a_ms, beta):
    """One bucket across nodes: a_ms of latency for its two collectives, and 2(n-1)/n of its
    bytes each way at beta bytes/s (a reduce-scatter, then an allgather)."""
    if nodes == 1:
        return 0.0
    return a_ms + 2 * (nodes - 1) / nodes * reals * 4 / beta * 1e3


def predict(layers, compute, update, nodes, a_ms, beta, overlap, eta=0.0, free_bytes=0.0):
    """Step ms: compute, then the buckets in order, each started when its gradients exist and
    the one before it is through (FIFO, one at a time), minus what ran under the backward
    pass; then the update. While the compute runs, the bytes move at (1 - eta) beta. The
    first free_bytes of a step cost nothing (tbf's burst, filled while the link was idle)."""
    if nodes == 1:
        return compute + update, 0.0
    events = backward_events(layers)
    t, free_ms = 0.0, free_bytes / beta * 1e3
    for lo, hi in buckets(layers, overlap):
        ready = compute * next(e for e, at in events if at <= lo) if overlap else compute
        t = max(t, ready) + a_ms
        left = exchange_ms(hi - lo, nodes, 0.0, beta)  # ms of transfer at full speed
        took = min(left, free_ms)
        left, free_ms = left - took, free_ms - took
        if t < compute and eta > 0:
            slow = (compute - t) * (1 - eta)  # full-speed ms done before the compute ends
            if left <= slow:
                t += left / (1 - eta)
                continue
            left -= slow
            t = compute
        t += left
    exposed = max(0.0, t - compute)
    return compute + exposed + update, exposed


# ---- the report ----

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backprop", required=True)
    p.add_argument("--allreduce", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=8, help="DDP's timed seconds per run")
    p.add_argument("--json", required=True, help="where the raw results go (or come from)")
    p.add_argument("--report", action="store_true", help="only rewrite --out from --json")
    args = p.parse_args()
    if args.report:
        with open(args.json) as f:
            saved = json.load(f)
        R = {tuple(int(x) if x.isdigit() else x for x in k.split("|")): v
             for k, v in saved["results"].items()}
        write(args, R, saved["allreduce"], {float(k): v for k, v in saved["sweep"].items()},
              saved["took"])
        return
    tmp = tempfile.mkdtemp(prefix="bench-cluster-")
    started = time.time()
    results = {}  # (workload, hosts, rate, mode) -> dict
    plan = [("W1", h, r) for h in (2, 3) for r in RATES]
    plan += [(w, h, r) for w in ("W2", "W3") for h in (2, 3) for r in RATES]
    plan.append((MATCHED[0], 2, MATCHED[1]))
    for w in ("W1", "W2", "W3", MATCHED[0]):
        results[(w, 1, "", "on")] = backprop(args, w, 1, True, tmp)
        if w != "W1":
            results[(w, 1, "", "ddp")] = {"rate": ddp(args, w, 1, args.seconds)}
        # one rank's shard of the batch at 2 and 3 ranks, alone: compute / p as it runs
        for parts in (2, 3) if w != "W1" else ():
            shard = math.ceil(WORKLOADS[w][1] / parts)
            results[(w, 1, f"shard{parts}", "on")] = backprop(args, w, 1, True, tmp, batch=shard)
        print(f"{w} 1 host: {results[(w, 1, '', 'on')]}", flush=True)
    current = None
    allreduce = {}  # rate -> {"default": (ms, bytes, floats), "duplex": {...}, "forced": {...}}
    for w, h, r in plan:
        if current != (h, r):
            up(h, r)
            current = (h, r)
            if h == 2:
                allreduce[r] = {"default": mpi_allreduce(args, h), "duplex": duplex(r)}
                if r == RATES[0]:
                    allreduce[r]["forced"] = {str(a): mpi_allreduce(args, h, a) for a in range(1, 7)}
        for mode in ("on", "off"):
            results[(w, h, r, mode)] = backprop(args, w, h, mode == "on", tmp, r)
        if w != "W1":
            results[(w, h, r, "ddp")] = {"rate": ddp(args, w, h, args.seconds)}
        print(f"{w} {h} hosts {r}: on {results[(w, h, r, 'on')]} off {results[(w, h, r, 'off')]}"
              f" ddp {results.get((w, h, r, 'ddp'))}", flush=True)
    # The default bucket size: the matched run's step against bucket_mb (same link still up).
    sweep = {}
    for mb in SWEEP_MB:
        sweep[mb] = backprop(args, MATCHED[0], 2, True, tmp, MATCHED[1], mb)
        print(f"bucket_mb {mb}: {sweep[mb]}", flush=True)
    # The exchange's CPU cost: W3 with overlap off on links without a limit.
    for h in (2, 3):
        up(h, "")
        results[("W3", h, UNLIMITED, "off")] = backprop(args, "W3", h, False, tmp, UNLIMITED)
        print(f"W3 {h} hosts unlimited: {results[('W3', h, UNLIMITED, 'off')]}", flush=True)
    run([CLUSTER, "down"])
    took = time.time() - started
    with open(args.json, "w") as f:
        json.dump({"results": {"|".join(map(str, k)): v for k, v in results.items()},
                   "allreduce": allreduce, "sweep": sweep, "took": took}, f, indent=1)
    write(args, results, allreduce, sweep, took)


def fmt(x, nd=1):
    return f"{x:,.{nd}f}"


def write(args, R, allreduce, sweep, took):
    cpu = re.search(r"Model name:\s+(.*)", run(["lscpu"])).group(1).strip()
    L = ["# Scaling across hosts", "",
         f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, {CORES} cores, Linux "
         f"{platform.release()}, by `scripts/bench-cluster.sh` (one run, {took / 60:.0f} minutes; "
         "every figure below comes from it).", "",
         "The hosts are network namespaces on this one machine (`scripts/cluster.sh`): TCP over "
         "veth pairs and a bridge, each host's link limited with `tbf` (50 ms queue). One rank "
         "per host, 1 BLAS thread, unbound (`--bind-to none`). All hosts share this machine's "
         f"{CORES} cores: 3 hosts take turns on them, and the kernel's TCP work for the links "
         "competes with the products (on real hosts each has its own cores).", "",
         "Workloads (Fashion-MNIST, `data.limit` examples, 2 epochs; samples/s of epoch 2; the "
         "step breakdown is the trainer's `step time` line, ms per step on rank 0 over both "
         "epochs): " + "; ".join(
             f"{w} {WORKLOADS[w][0]} batch {WORKLOADS[w][1]}" for w in WORKLOADS) + ". "
         "PyTorch: DDP over gloo, one process per host started in the host's namespace, the "
         "same net, batch and update (bench/torch_train.py; on 1 host, one process without "
         f"DDP), samples/s over {args.seconds:g} s after a 2 s warm-up.", "",
         "## Runs", "",
         "exposed = step - compute - update: the exchange the step waited for; hidden: the rest "
         "of the exchange, which ran under the backward pass. Buffers that fit in one 4 MB "
         "bucket (W1, W2) are one bucket, sent after the backward pass with overlap on or off.",
         "", "| workload | hosts | link | backprop samples/s, overlap on | off | PyTorch | "
         "step on / off (ms) | compute on / off | exposed on / off | exposed cut by overlap | "
         "hidden (on) | update |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({k[:3] for k in R if not str(k[2]).startswith("shard") and k[2] != UNLIMITED},
                  key=lambda k: (list(WORKLOADS).index(k[0]), k[1], -rate_bits(k[2]) if k[2] else 0))
    for w, h, r in keys:
        on, off, dd = R[(w, h, r, "on")], R.get((w, h, r, "off")), R.get((w, h, r, "ddp"))
        torch = fmt(dd["rate"], 0) if dd else "-"
        if h == 1:
            L.append(f"| {w} | 1 | - | {fmt(on['rate'], 0)} | - | {torch} | {on['step']:.3f} | "
                     f"{on['compute']:.3f} | - | - | - | {on['update']:.3f} |")
            continue
        cut = 1 - on["exposed"] / off["exposed"] if off["exposed"] > 0 else 0
        L.append(f"| {w} | {h} | {r} | {fmt(on['rate'], 0)} | {fmt(off['rate'], 0)} | {torch} | "
                 f"{on['step']:.3f} / {off['step']:.3f} | {on['compute']:.3f} / "
                 f"{off['compute']:.3f} | {on['exposed']:.3f} / {off['exposed']:.3f} | "
                 f"{100 * cut:+.0f} % | {on['hidden']:.3f} | {on['update']:.3f} |")
    w, r = MATCHED
    on, off, dd = R[(w, 2, r, "on")], R[(w, 2, r, "off")], R[(w, 2, r, "ddp")]
    L += ["", f"**The overlap experiment.** {w} on 2 hosts at {r}, where the exchange "
          f"({off['exposed']:.1f} ms with overlap off) takes about as long as the backward pass "
          f"(2/3 of the {off['compute']:.1f} ms compute). Overlap cuts the exposed exchange from "
          f"{off['exposed']:.1f} to {on['exposed']:.1f} ms "
          f"({100 * (1 - on['exposed'] / off['exposed']):.0f} % less) and the step from "
          f"{off['step']:.1f} to {on['step']:.1f} ms; the compute beside it grows from "
          f"{off['compute']:.1f} to {on['compute']:.1f} ms (the kernel's TCP work takes cores "
          f"from the products). backprop: {fmt(on['rate'], 0)} samples/s; PyTorch DDP on the "
          f"same link: {fmt(dd['rate'], 0)} (backprop {on['rate'] / dd['rate']:.2f}x).", "",
          "Where the link is slower than that, the exchange is several times the backward pass "
          "and there is little to hide: W3 at 1 Gbit/s spends 4 to 6 times its compute in the "
          "exchange, and the table shows overlap there within a few percent of off, either way "
          "(the CPU the overlapped exchange takes from the products costs about what it hides).",
          ""]
    L += ["## Open MPI's allreduce against the exchange", "",
          "MPI_Allreduce of W3's buffer between 2 hosts (bench/allreduce.c) and backprop's "
          "exchange of the same buffer (W3, overlap off), with the bytes each host sent (its "
          "tx counter, per call or per step):", "",
          "| link | MPI_Allreduce ms | bytes per call and host | backprop exchange ms | "
          "bytes per step and host | the bytes at the link's rate |", "|---|---|---|---|---|---|"]
    for r in RATES:
        ms, sent, _ = allreduce[r]["default"]
        off = R[("W3", 2, r, "off")]
        L.append(f"| {r} | {ms:.1f} | {sent / 1e6:.1f} MB | {off['exposed']:.1f} | "
                 f"{off['bytes_per_step'] / 1e6:.1f} MB | "
                 f"{sent / (rate_bits(r) / 8 * TCP_PAYLOAD) * 1e3:.1f} ms |")
    forced = allreduce[RATES[0]]["forced"]
    best = min(forced, key=lambda k: forced[k][0])
    d = allreduce
    L += ["", "Both send the same bytes, and the link carries both directions at once "
          "(bench/tcp_duplex.py, plain TCP between the same namespaces, Gbit/s of data: " +
          "; ".join(f"at {r} {d[r]['duplex']['one']:.2f} one way, {d[r]['duplex']['both']:.2f} "
                    "each way with both at once" for r in d) + "). So neither the bytes nor "
          "duplex make Open MPI's allreduce take about twice the bytes' time; its own choice "
          "of algorithm does. Each of coll_tuned's algorithms, forced, at " + RATES[0] + " (" +
          ", ".join(f"{a}: {forced[a][0]:.0f} ms" for a in sorted(forced)) + "; "
          "`--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm N`, "
          f"{ALGORITHMS}): the fastest, {best}, takes {forced[best][0]:.0f} ms, about the "
          "exchange's time, and Open MPI's choice for this size is not it. "
          "The exchange moves its bytes with MPI_Ialltoallv and MPI_Iallgatherv and sums them "
          "itself, in its own order, whatever the size.", ""]
    w, r = MATCHED
    L += ["## The bucket size", "",
          f"{w} on 2 hosts at {r}, overlap on, against `[comm] bucket_mb` (the default, 4, is "
          "the best of these):", "",
          "| bucket_mb | buckets | step ms | exposed ms | hidden ms |", "|---|---|---|---|---|"]
    for mb, m in sorted(sweep.items()):
        L.append(f"| {mb:g} | {len(buckets(WORKLOADS[w][0], True, mb))} | {m['step']:.1f} | "
                 f"{m['exposed']:.1f} | {m['hidden']:.1f} |")
    L.append("")
    L += model_section(R, allreduce)
    with open(args.out, "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {args.out}")


def model_params(R, allreduce):
    """Per rate, a and beta from the two 2-host runs with overlap off (W2's 1.1 MB and W3's
    23 MB buffers: two equations, two unknowns), a growing with the peers; the overlap's cost
    on this shared CPU from the matched pair: kappa (the compute grows) and eta (the bytes
    slow while it runs)."""
    beta, a = {}, {}

    def sent(w, h, r):  # bytes each host sends in a step, less tbf's burst
        _, n = offsets(WORKLOADS[w][0])
        return 2 * (h - 1) / h * n * 4 - burst_bytes(R, w, h, r)

    for r in RATES:
        e2, e3 = R[("W2", 2, r, "off")]["exposed"], R[("W3", 2, r, "off")]["exposed"]
        beta[r] = (sent("W3", 2, r) - sent("W2", 2, r)) / ((e3 - e2) / 1e3)
        a[r] = max(0.0, e2 - sent("W2", 2, r) / beta[r] * 1e3)
    w, r = MATCHED
    a[r] = sum(a.values()) / len(a)
    beta[r] = sent(w, 2, r) / ((R[(w, 2, r, "off")]["exposed"] - a[r]) / 1e3)
    on, off = R[(w, 2, r, "on")], R[(w, 2, r, "off")]
    kappa = on["compute"] / off["compute"] - 1
    # Seconds per byte the exchange's CPU work adds at 3 hosts over 2 (3 ranks and the
    # kernel's TCP work on 2 cores), from W3 on unlimited links; at 2 hosts beta has it.
    cpu = {h: R[("W3", h, UNLIMITED, "off")]["exposed"] / 1e3 / sent("W3", h, UNLIMITED)
           for h in (2, 3)}
    dgamma = {2: 0.0, 3: max(0.0, cpu[3] - cpu[2])}
    compute = compute_at(R, w, 2) * (1 + kappa)
    eta = min((x / 100 for x in range(0, 96)), key=lambda e: abs(
        predict(WORKLOADS[w][0], compute, 0, 2, a[r], beta[r], True, e,
                burst_bytes(R, w, 2, r))[1] - on["exposed"]))
    return beta, a, kappa, eta, dgamma, cpu


def burst_bytes(R, w, hosts, rate):
    """What tbf lets through at once after the link idled through the compute."""
    if rate == UNLIMITED:
        return 0.0
    return min(BURST, compute_at(R, w, hosts) / 1e3 * rate_bits(rate) / 8)


def compute_at(R, w, hosts):
    """compute / p: one rank's shard of the batch, measured alone, times the turns that more
    hosts than cores take here."""
    one = R[(w, 1, f"shard{hosts}" if hosts > 1 else "", "on")]
    return one["compute"] * max(1.0, hosts / CORES)


def model_section(R, allreduce):
    beta, a, kappa, eta, dgamma, cpu = model_params(R, allreduce)
    L = ["## A model of the step", "",
         "step = compute / p + exposed exchange + update:", "",
         "- compute / p: one rank's shard of the global batch (ceil(B/p) rows), its compute "
         "measured alone on 1 host (the products of a smaller shard run a little less "
         f"efficiently), times max(1, p/{CORES}) here, where more hosts than cores take turns;",
         "- a bucket of b reals across n nodes costs a + 2 (n-1)/n * 4b / beta: the "
         "algorithm is a reduce-scatter and an allgather, each sending (n-1)/n of the bucket "
         "each way at once;",
         "- overlap (more than one bucket): the buckets (src/exchange.c's cut, 4 MB) start "
         "when the backward pass has made their gradients (src/net.c's order, timed by "
         "multiply-adds) and the bucket before is through; exposed = when the last one ends - "
         "when the compute ends. Overlap off or one bucket: the whole exchange after the "
         "compute;",
         "- this test bed only: tbf lets its burst (256 kB) through at once after the link "
         "idled, up to what its rate refills during the compute; and the hosts share 2 cores, so the kernel's TCP work for an "
         "overlapped exchange runs on the cores the products use. The compute then grows by "
         "kappa, and the bytes that move while it runs go at (1 - eta) beta; and 3 ranks on "
         "2 cores add CPU time to every byte exchanged: 1/beta becomes 1/beta + dgamma;",
         "- the update: the 1-host update (every rank updates the whole net).", "",
         "Parameters, measured in this run: per link rate, a (per peer) and beta from the "
         "2-host runs of W2 and W3 with overlap off (1.1 and 23 MB: two equations; " +
         ", ".join(f"{r}: a {a[r]:.2f} ms, beta {beta[r] * 8 / 1e9:.2f} Gbit/s" for r in RATES) +
         f"; at {MATCHED[1]}, a as the mean of those and beta from {MATCHED[0]}'s: "
         f"{beta[MATCHED[1]] * 8 / 1e9:.2f} Gbit/s. Plain TCP each way with both ways busy, "
         "for comparison: " + ", ".join(
             f"{r} {v['duplex']['both']:.2f}" for r, v in allreduce.items()) + "); a bucket "
         "across n hosts pays a (n-1): each collective sends n-1 messages; "
         f"kappa = {kappa:.3f} and eta = {eta:.2f} from the {MATCHED[0]} pair (compute on "
         "against off; eta where the model meets its exposed exchange); dgamma at 3 hosts = "
         f"{dgamma[3] * 1e9:.2f} ms per MB, the difference between W3's exchange time per byte "
         "on links without a limit at 3 hosts and at 2 (overlap off: "
         f"{R[('W3', 3, UNLIMITED, 'off')]['exposed']:.1f} ms for 3 hosts, "
         f"{R[('W3', 2, UNLIMITED, 'off')]['exposed']:.1f} ms for 2). So the rows marked "
         "'calibrates' set the parameters; the others test the model.", "",
         "| workload | hosts | link | overlap | measured step ms | predicted | error | "
         "measured exposed | predicted | |", "|---|---|---|---|---|---|---|---|---|---|"]
    worst, worst_row = 0.0, ""
    for (w, h, r, mode), m in sorted(R.items(), key=lambda kv: (list(WORKLOADS).index(kv[0][0]),
                                                                kv[0][1], str(kv[0][2]),
                                                                kv[0][3])):
        if mode == "ddp" or w == "W1" or h == 1 or r == UNLIMITED:
            continue
        step, exposed = predict_run(R, w, h, r, mode == "on", beta, a, kappa, eta, dgamma)
        err = step / m["step"] - 1
        test = not ((w, r) == MATCHED or (w in ("W2", "W3") and h == 2 and mode == "off"))
        if test and abs(err) > worst:
            worst, worst_row = abs(err), f"{w}, {h} hosts, {r}, overlap {mode}"
        L.append(f"| {w} | {h} | {r} | {mode} | {m['step']:.2f} | {step:.2f} | "
                 f"{100 * err:+.1f} % | {m['exposed']:.2f} | {exposed:.2f} | "
                 f"{'test' if test else 'calibrates'} |")
    L += ["", f"Largest error of the tested rows: {100 * worst:.1f} % ({worst_row}).", ""]
    L += predictions(R)
    return L


def predict_run(R, w, h, r, overlap, beta, a, kappa, eta, dgamma):
    layers = WORKLOADS[w][0]
    compute = compute_at(R, w, h)
    several = overlap and len(buckets(layers, True)) > 1
    if several:
        compute *= 1 + kappa
    return predict(layers, compute, R[(w, 1, "", "on")]["update"], h, a[r] * (h - 1),
                   1 / (1 / beta[r] + dgamma[h]), several, eta if several else 0.0,
                   burst_bytes(R, w, h, r))


NETWORKS = {  # name: a (ms per bucket: two collectives), per-message cost (ms), beta (bytes/s)
    "25 Gbit/s Ethernet (TCP)": (0.050, 0.002, 25e9 / 8 * TCP_PAYLOAD),
    "100 Gbit/s InfiniBand": (0.005, 0.0005, 100e9 / 8 * 0.95),
}


def predictions(R):
    L = ["## Predictions for larger clusters", "",
         "One rank per node, with this machine's per-core compute (C1 above), on two networks "
         "whose parameters are typical figures, not measured here: 25 Gbit/s Ethernet, a = "
         "50 us per bucket plus 2 us per peer message, beta = 25 Gbit/s x 1448/1514; 100 Gbit/s "
         "InfiniBand, a = 5 us plus 0.5 us per peer message, beta = 95 % of 100 Gbit/s. The "
         "reduce-scatter and the allgather each send n-1 messages per bucket, so a bucket "
         "costs a + 2 (n-1) x the per-message cost in latency. Fixed global batch: the batch of "
         "the workload split among the nodes; fixed batch per rank: each node computes the "
         "workload's batch, the global batch grows with the nodes. Overlap on.", "",
         "| workload | network | batch | nodes | step ms | exposed ms | samples/s | speed-up | "
         "efficiency |", "|---|---|---|---|---|---|---|---|---|"]
    stops, at256 = [], {}
    for w in ("W2", "W3"):
        layers, B = WORKLOADS[w][0], WORKLOADS[w][1]
        one = R[(w, 1, "", "on")]
        base = B / (one["step"] / 1e3)
        for net, (a0, per_msg, beta) in NETWORKS.items():
            for fixed in ("global", "per rank"):
                for n in (8, 64, 256):
                    a_n = a0 + 2 * (n - 1) * per_msg
                    if fixed == "global":
                        compute, batch = one["compute"] * math.ceil(B / n) / B, B
                    else:
                        compute, batch = one["compute"], B * n
                    step, exposed = predict(layers, compute, one["update"], n, a_n, beta, True)
                    rate = batch / (step / 1e3)
                    L.append(f"| {w} | {net} | {fixed} {batch} | {n} | {step:.3f} | "
                             f"{exposed:.3f} | {fmt(rate, 0)} | {rate / base:.1f}x | "
                             f"{100 * rate / base / n:.0f} % |")
                    if fixed == "per rank" and n == 256:
                        at256[(w, net)] = rate / base / n
                    if fixed == "global" and rate / base / n < 0.5:
                        stops.append((w, net, n, compute, exposed, one["update"]))
    L += ["", "Where scaling stops: at fixed global batch the compute per node shrinks as 1/n, "
          "while the exchange does not: every node still sends and receives about twice the "
          "buffer per step (2 (n-1)/n of it), and the latency per bucket grows with the peers. "
          "The update does not shrink either (every rank updates the whole net)."]
    seen = set()
    for w, net, n, compute, exposed, update in stops:
        if (w, net) in seen:
            continue
        seen.add((w, net))
        L.append(f"- {w} on {net}: below 50 % efficiency by {n} nodes: {compute:.3f} ms of "
                 f"compute per step against {exposed:.3f} ms of exposed exchange and "
                 f"{update:.3f} ms of update.")
    L += ["", "At fixed batch per rank the compute per node stays, and what is left of the "
          "exchange after the backward pass sets the efficiency at 256 nodes: " + "; ".join(
              f"{w} on {net}: {100 * e:.0f} %" for (w, net), e in at256.items()) + ". W3's "
          "buckets hide behind its backward pass; W2's buffer fits in one 4 MB bucket, sent "
          "after the backward pass, so its latency terms stay exposed (a smaller bucket_mb "
          "would split it). The global batch (B x n) then becomes a limit for training itself "
          "rather than for speed.", ""]
    return L


if __name__ == "__main__":
    main()
