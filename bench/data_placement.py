"""The driver of scripts/bench-data.sh: [data] placement measured (issue 16).

  rss      peak memory of each rank, 4 ranks on this node, the main job (1 epoch):
           replicated and node from Debian's gzip IDX files, stream from the same data
           converted to a contiguous HDF5 file. Sampled every 20 ms from
           /proc/PID/smaps_rollup: Rss (what top shows; counts the shared pages a rank
           touched), Pss (shared pages divided among the ranks that map them) and Anonymous
           (the rank's private memory).
  startup  seconds from starting mpirun to the banner (the data read and the net built),
           main job at 2 and 4 ranks, replicated against node, alternating, medians; and
           rank 0's own "read in" time.
  big      a generated HDF5 set at least 4x the memory each rank may use (a memory cgroup
           per rank, root only): stream at 1, 2 and 4 ranks inside the limit, replicated at
           2 and 4 ranks outside it for the reference; replicated inside it is refused.
  w2       W2 ([784,256,256,10], batch 128) at 2 ranks on this node, replicated against
           stream, samples/s alternating, medians.
  hosts    W2 across 2 simulated hosts (scripts/cluster.sh: network namespaces), replicated
           against stream; the step line shows the rows' time (data).
  rows     what one row costs streamed (pread) and copied from memory (bench-rowread).
  eval     backprop eval of 2,000,000 x 64 float32 rows (512 MB), alone: read in place from
           a contiguous file against loaded whole from a chunked copy, each with the file
           out of the page cache (root: drop_caches) and in it; seconds (medians) and the
           peak private memory (Anonymous); then in the page cache at 2 ranks (mpirun
           --bind-to none), mpirun's start included.
usage: data_placement.py BACKPROP OUTDIR [rss,startup,big,w2,hosts,rows,eval] [REPS] [--doc FILE]
With --doc, the results also replace the section "## Data placement" at the end of FILE
(docs/benchmarks.md; bench/run.py keeps that section when it rewrites the rest).
"""
import os
import re
import statistics
import subprocess
import sys
import threading
import time

import h5py
import numpy as np

FMNIST = "/usr/share/datasets/fashion-mnist"
MPI = ["mpirun", "--oversubscribe", "--bind-to", "none"]


def sh(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw).stdout


class Sampler(threading.Thread):
    """Peak Rss, Pss and Anonymous (MiB) of each process whose command line has `tag`, by
    its MPI rank."""

    def __init__(self, tag):
        super().__init__(daemon=True)
        self.tag, self.peak, self.done = tag, {}, False

    def run(self):
        while not self.done:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().split(b"\0")
                    if not cmd[0].endswith(b"backprop") or self.tag.encode() not in b" ".join(cmd):
                        continue
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
                    rank = int(env.get(b"OMPI_COMM_WORLD_RANK", b"0"))
                    with open(f"/proc/{pid}/smaps_rollup") as f:
                        roll = {m[0]: int(m[1]) / 1024 for m in re.findall(r"^(\w+):\s+(\d+) kB", f.read(), re.M)}
                except (OSError, ValueError):
                    continue
                p = self.peak.setdefault(rank, {"Rss": 0, "Pss": 0, "Anonymous": 0})
                for key in p:
                    p[key] = max(p[key], roll.get(key, 0))
            time.sleep(0.02)


def train(backprop, np_, ini, rundir, *sets, prefix=(), env=None):
    cmd = list(prefix) + [backprop, "train", ini, "--set", f"checkpoint.dir={rundir}",
                          "--set", "log.progress=off"] + [a for s in sets for a in ("--set", s)]
    if np_:
        cmd = MPI + ["-np", str(np_)] + cmd
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    banner_at, lines = None, []
    for line in proc.stdout:
        if line.startswith("data:") and banner_at is None:
            banner_at = time.monotonic() - started
        lines.append(line)
    proc.wait()
    out = "".join(lines)
    return proc.returncode, out, banner_at


def grab(pattern, text, cast=float):
    m = re.search(pattern, text, re.M)
    return cast(m.group(1)) if m else None


def last_row(rundir):
    with open(f"{rundir}/metrics.csv") as f:
        return f.read().strip().splitlines()[-1].split(",")


def weights_diff(a, b):
    """The largest difference of any weight or bias, by tests/cli/compare_weights.py."""
    got = subprocess.run(["/usr/bin/python3", "tests/cli/compare_weights.py", a, b, "1e9"],
                         capture_output=True, text=True).stdout
    return float(re.search(r"max \|difference\| ([0-9.e+-]+)", got).group(1))


def convert(backprop, out):
    for part, name in (("train", "train"), ("t10k", "test")):
        path = f"{out}/{name}.h5"
        if not os.path.exists(path):
            sh(backprop, "convert", "--idx-images", f"{FMNIST}/{part}-images-idx3-ubyte.gz",
               "--idx-labels", f"{FMNIST}/{part}-labels-idx1-ubyte.gz", "--out", path, "--contiguous")


def main_ini(out):
    """configs/fashion-mnist.ini with the converted HDF5 files."""
    path = f"{out}/main-h5.ini"
    with open("configs/fashion-mnist.ini") as f:
        text = f.read()
    text = re.sub(r"^train = .*$", f"train = {out}/train.h5", text, flags=re.M)
    text = re.sub(r"^test = .*$", f"test = {out}/test.h5", text, flags=re.M)
    text = re.sub(r"^(train|test)_labels = .*\n", "", text, flags=re.M)
    with open(path, "w") as f:
        f.write(text)
    return path


def bench_rss(backprop, out, reps):
    convert(backprop, out)
    h5ini = main_ini(out)
    print("## Peak memory per rank: 4 ranks on one node, main job (1 epoch)\n")
    print("| placement | data files | rank | peak Rss MiB | peak Pss MiB | peak private (Anonymous) MiB | read in s (rank 0) |")
    print("|---|---|---|---|---|---|---|")
    for place, ini, files in (("replicated", "configs/fashion-mnist.ini", "gzip IDX"),
                              ("node", "configs/fashion-mnist.ini", "gzip IDX"),
                              ("stream", h5ini, "contiguous HDF5")):
        tag = f"{out}/rss-{place}"
        sampler = Sampler(tag)
        sampler.start()
        rc, log, _ = train(backprop, 4, ini, tag, "train.epochs=1", f"data.placement={place}",
                           "train.threads=1")
        sampler.done = True
        sampler.join()
        assert rc == 0, log
        read = grab(r"read in ([0-9.]+) s", log)
        for rank in sorted(sampler.peak):
            p = sampler.peak[rank]
            print(f"| {place} | {files} | {rank} | {p['Rss']:.0f} | {p['Pss']:.0f} | {p['Anonymous']:.0f} | {read if rank == 0 else ''} |")
    print()


def bench_startup(backprop, out, reps):
    print("## Start-up: the main job (1 epoch), mpirun to the banner (data read, net built)\n")
    print("| ranks | placement | start-up s (median of %d) | rank 0 read in s (median) |" % reps)
    print("|---|---|---|---|")
    for np_ in (2, 4):
        got = {"replicated": [], "node": []}
        for rep in range(reps):
            for place in got:
                rc, log, banner = train(backprop, np_, "configs/fashion-mnist.ini",
                                        f"{out}/start-{np_}-{place}-{rep}", "train.epochs=1",
                                        f"data.placement={place}", "train.threads=1")
                assert rc == 0, log
                got[place].append((banner, grab(r"read in ([0-9.]+) s", log)))
        for place, runs in got.items():
            print(f"| {np_} | {place} | {statistics.median(r[0] for r in runs):.2f} | "
                  f"{statistics.median(r[1] for r in runs):.2f} |")
    print()


def make_big(path, n, d, classes=10):
    """n x d float32 rows (contiguous), labels from a fixed linear rule; written in blocks."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((d, classes)).astype(np.float32)
    with h5py.File(path, "w") as f:
        X = f.create_dataset("X", (n, d), dtype="f4")  # contiguous: h5py's default
        y = f.create_dataset("y", (n,), dtype="i4")
        for lo in range(0, n, 20000):
            hi = min(n, lo + 20000)
            block = rng.standard_normal((hi - lo, d)).astype(np.float32)
            X[lo:hi] = block
            y[lo:hi] = np.argmax(block @ W, axis=1)


def cgroup_root():
    for line in open("/proc/self/cgroup"):
        _, ctl, path = line.strip().split(":", 2)
        if "memory" in ctl.split(","):
            return f"/sys/fs/cgroup/memory{path}"
        if ctl == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            return f"/sys/fs/cgroup{path}"
    return None


def bench_big(backprop, out, reps, limit_mb=256):
    root = cgroup_root()
    if not root or not os.access(root, os.W_OK):
        print("## Larger than a rank's memory: skipped (no writable memory cgroup here)\n")
        return
    n, d = 330000, 1000
    path = f"{out}/big.h5"
    if not os.path.exists(path):
        make_big(path, n, d)
    size_mb = os.path.getsize(path) / 2**20
    ini = f"{out}/big.ini"
    with open(ini, "w") as f:
        f.write(f"""[data]
train = {path}
validation_split = 10000
[network]
layers = {d}, 64, 10
hidden = relu
output = softmax
init = he
[train]
epochs = 1
batch_size = 256
learning_rate = 0.05
lambda = 1
threads = 1
[checkpoint]
every_epochs = 0
""")
    v1 = os.path.exists(f"{root}/memory.limit_in_bytes")
    limit_file, peak_file = (("memory.limit_in_bytes", "memory.max_usage_in_bytes") if v1
                             else ("memory.max", "memory.peak"))
    # Each rank moves itself into a cgroup of its own, limited to limit_mb, then becomes
    # backprop: the kernel's OOM killer enforces the limit, and backprop reads it.
    wrapper = f"{out}/in-cgroup.sh"
    with open(wrapper, "w") as f:
        f.write(f"""#!/bin/sh
cg={root}/bp-bench-$OMPI_COMM_WORLD_RANK-$BP_RUN
mkdir -p "$cg" && echo {limit_mb}M >"$cg/{limit_file}" && echo $$ >"$cg/cgroup.procs" || exit 1
exec "$@"
""")
    os.chmod(wrapper, 0o755)

    def peaks(run, np_):
        got = []
        for r in range(np_):
            cg = f"{root}/bp-bench-{r}-{run}"
            try:
                with open(f"{cg}/{peak_file}") as f:
                    got.append(int(f.read()) / 2**20)
            except OSError:
                got.append(float("nan"))
            for _ in range(50):
                try:
                    os.rmdir(cg)
                    break
                except OSError:
                    time.sleep(0.1)
        return got

    print(f"## Larger than a rank's memory: {n} x {d} float32 rows, {size_mb:.0f} MiB on disk, "
          f"{size_mb / limit_mb:.1f}x the {limit_mb} MiB each rank may use (a memory cgroup per rank)\n")
    print("| run | ranks | in the cgroup | exit | placement (banner) | peak RSS per rank MiB | cgroup peak per rank MiB (page cache included) | final val_cost | samples/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, np_, place, limited in (("stream", 1, "auto", True), ("stream", 2, "auto", True),
                                       ("stream", 4, "auto", True), ("replicated", 2, "replicated", False),
                                       ("replicated", 4, "replicated", False),
                                       ("refused", 2, "replicated", True)):
        run = f"{label}-{np_}"
        env = dict(os.environ, BP_RUN=run)
        # Out of the page cache (where writing it left it, charged to this script): the
        # ranks read it from the disk, and their cgroups pay for what they cache.
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        sampler = Sampler(f"{out}/big-{run}")
        sampler.start()
        rc, log, _ = train(backprop, np_, ini, f"{out}/big-{run}", f"data.placement={place}",
                           prefix=[wrapper] if limited else [], env=env)
        sampler.done = True
        sampler.join()
        cg = peaks(run, np_) if limited else []
        shown = grab(r"placement ([^;]+);", log, str) or "-"
        err = grab(r"^backprop: error: (.*)$", log, str)
        rss = " / ".join(f"{sampler.peak[r]['Rss']:.0f}" for r in sorted(sampler.peak))
        cgs = " / ".join(f"{c:.0f}" for c in cg) or "-"
        row = last_row(f"{out}/big-{run}") if rc == 0 else None
        what = shown if rc == 0 else err
        val = row[4] if row else "-"
        rate = f"{float(row[8]):.0f}" if row else "-"
        print(f"| {label} | {np_} | {'yes' if limited else 'no'} | {rc} | {what} | {rss} | {cgs} | "
              f"{val} | {rate} |")
    print()
    for np_ in (2, 4):
        diff = weights_diff(f"{out}/big-stream-{np_}/latest.h5", f"{out}/big-replicated-{np_}/latest.h5")
        print(f"- stream at {np_} ranks (in the cgroups) against replicated at {np_} (outside): "
              f"largest weight difference {diff:g}")
    for np_ in (2, 4):
        diff = weights_diff(f"{out}/big-stream-1/latest.h5", f"{out}/big-stream-{np_}/latest.h5")
        print(f"- stream at {np_} ranks against 1 rank: largest weight difference {diff:.3g}")
    print()


def w2_ini(out):
    path = f"{out}/w2.ini"
    with open(path, "w") as f:
        f.write(f"""[data]
train = {out}/train.h5
test = {out}/test.h5
[network]
layers = 784, 256, 256, 10
hidden = relu
output = softmax
init = he
[train]
epochs = 2
batch_size = 128
learning_rate = 0.1
lambda = 5
threads = 1
[checkpoint]
every_epochs = 0
""")
    return path


def w2_side_by_side(backprop, out, reps, title, tag, np_, prefix=()):
    """W2 replicated and streamed, alternating: a table of median samples/s (epoch 2) and
    the last run's step line, and the ratio."""
    ini = w2_ini(out)
    print(f"## {title}\n")
    print(f"| placement | samples/s, epoch 2 (median of {reps}) | step time line (last run) |")
    print("|---|---|---|")
    got = {"replicated": [], "stream": []}
    lines = {}
    for rep in range(reps):
        for place in got:
            rundir = f"{out}/{tag}-{place}-{rep}"
            rc, log, _ = train(backprop, np_, ini, rundir, f"data.placement={place}", prefix=prefix)
            assert rc == 0, log
            got[place].append(float(last_row(rundir)[8]))
            lines[place] = grab(r"^(step time: .*?)  \[", log, str)
    for place, rates in got.items():
        print(f"| {place} | {statistics.median(rates):.0f} | {lines[place]} |")
    ratio = statistics.median(got["stream"]) / statistics.median(got["replicated"])
    print(f"\nstream / replicated: {ratio:.3f}\n")


def bench_w2(backprop, out, reps):
    convert(backprop, out)
    w2_side_by_side(backprop, out, reps,
                    "W2 at 2 ranks on this node: replicated against stream (same HDF5 files)",
                    "w2", 2)


def bench_rows(backprop, out, reps):
    convert(backprop, out)
    probe = os.path.join(os.path.dirname(backprop), "bench-rowread")
    print("## A row streamed against a row in memory (bench/row_read.c, the main job's train.h5)\n")
    for _ in range(reps):
        print("- " + sh(probe, f"{out}/train.h5").strip())
    print()


def bench_hosts(backprop, out, reps):
    convert(backprop, out)
    subprocess.run(["scripts/cluster.sh", "up", "2"], check=True, capture_output=True)
    try:
        w2_side_by_side(backprop, out, reps,
                        "W2 across 2 simulated hosts (1 rank each, unshaped veth links)", "hosts",
                        0, ["scripts/cluster.sh", "run", "--", "--bind-to", "none"])
    finally:
        subprocess.run(["scripts/cluster.sh", "down"], capture_output=True)


def bench_eval(backprop, out, reps):
    """eval of a set read in place against the same rows loaded whole."""
    n, d = 2_000_000, 64
    inplace, chunked = f"{out}/eval-contiguous.h5", f"{out}/eval-chunked.h5"
    if not os.path.exists(chunked):
        make_big(inplace, n, d)
        with h5py.File(inplace) as f, h5py.File(chunked, "w") as g:
            X = g.create_dataset("X", (n, d), dtype="f4", chunks=(4096, d))
            for lo in range(0, n, 200000):
                X[lo:lo + 200000] = f["X"][lo:lo + 200000]
            g["y"] = f["y"][:]
    ini = f"{out}/eval.ini"
    with open(ini, "w") as f:
        f.write(f"[data]\ntrain = {inplace}\nlimit = 20000\n[network]\nlayers = {d}, 32, 10\n"
                "hidden = relu\noutput = softmax\n[train]\nepochs = 1\nbatch_size = 100\n"
                "learning_rate = 0.1\n")
    rc, log, _ = train(backprop, 0, ini, f"{out}/eval-run")
    assert rc == 0, log
    can_drop = os.access("/proc/sys/vm/drop_caches", os.W_OK)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    got, json = {}, {}
    for _ in range(reps):
        for name, path in (("in place", inplace), ("loaded whole", chunked)):
            for cache in ("cold", "warm") if can_drop else ("warm",):
                if cache == "cold":
                    subprocess.run(["sync"], check=True)
                    with open("/proc/sys/vm/drop_caches", "w") as f:
                        f.write("3\n")
                sampler = Sampler(os.path.basename(path))
                sampler.start()
                started = time.monotonic()
                json[name] = sh(backprop, "eval", "--checkpoint", f"{out}/eval-run/latest.h5",
                                "--data", path, "--json", env=env)
                took = time.monotonic() - started
                sampler.done = True
                sampler.join()
                r = got.setdefault((name, cache), {"s": [], "private": []})
                r["s"].append(took)
                r["private"].append(sampler.peak.get(0, {}).get("Anonymous", 0))
    for _ in range(reps):  # 2 ranks, unbound: each rank's share, and its threads (auto)
        for name, path in (("in place", inplace), ("loaded whole", chunked)):
            started = time.monotonic()
            sh(*MPI, "-np", "2", backprop, "eval", "--checkpoint", f"{out}/eval-run/latest.h5",
               "--data", path, "--json")
            got.setdefault((name, "warm, 2 ranks"), {"s": [], "private": []})["s"].append(
                time.monotonic() - started)
    same = json["in place"] == json["loaded whole"]
    print("## eval of a set read in place against loaded whole (2,000,000 x 64 float32, 512 MB, 1 rank)\n")
    print("| read | page cache | seconds (median) | runs | peak private MiB |")
    print("|---|---|---|---|---|")
    for (name, cache), r in got.items():
        private = f"{max(r['private']):.0f}" if r["private"] else ""
        print(f"| {name} | {cache} | {statistics.median(r['s']):.2f} | "
              f"{' '.join(f'{v:.2f}' for v in r['s'])} | {private} |")
    print(f"\n`eval --json` the same both ways: {'yes' if same else 'NO'}."
          + ("" if can_drop else " Cold runs need root (drop_caches); only warm ones ran.") + "\n")


SECTION = "## Data placement"


class Tee:
    """stdout, kept too."""

    def __init__(self):
        self.text, self.out = [], sys.stdout

    def write(self, s):
        self.text.append(s)
        self.out.write(s)

    def flush(self):
        self.out.flush()


def main():
    args = sys.argv[1:]
    doc = None
    if "--doc" in args:
        i = args.index("--doc")
        doc = args[i + 1]
        del args[i:i + 2]
    backprop, out = os.path.abspath(args[0]), args[1]
    parts = (args[2] if len(args) > 2 else "rss,startup,big,w2,hosts,rows,eval").split(",")
    reps = int(args[3]) if len(args) > 3 else 3
    cpu = sh("lscpu")
    model = re.search(r"^Model name:\s*(.*)$", cpu, re.M).group(1)
    sys.stdout = tee = Tee()
    print(f"{SECTION} (`scripts/bench-data.sh`)\n")
    print("What each part measures: docs/data.md.\n")
    for part in parts:
        at = len(tee.text)
        globals()[f"bench_{part}"](backprop, out, reps)
        # each part says when and where it ran, under its heading
        head = "".join(tee.text[at:]).split("\n\n", 1)
        tee.text[at:] = [head[0] + f"\n\nMeasured {time.strftime('%Y-%m-%d')} on {model}, "
                         f"{os.cpu_count()} cores: `scripts/bench-data.sh {part} {reps}`.\n\n"
                         + (head[1] if len(head) > 1 else "")]
    sys.stdout = tee.out
    if doc:
        update_doc(doc, "".join(tee.text))


def subsections(text):
    """{heading: block} of a "## Data placement" section's "### " parts, in order."""
    parts = re.split(r"(?m)^(?=### )", text)
    return parts[0], {p.split("\n", 1)[0].split(":")[0]: p for p in parts[1:]}


def update_doc(doc, new):
    """Replaces the parts just measured in doc's Data placement section, keeping the others."""
    with open(doc) as f:
        text = f.read()
    new = new.replace("\n## ", "\n### ")
    new = new.replace("### Data placement", "## Data placement", 1)
    at = text.find("\n" + SECTION)
    head, old_parts = subsections(text[at + 1:]) if at >= 0 else ("", {})
    new_head, new_parts = subsections(new)
    merged = dict(old_parts)
    merged.update(new_parts)
    body = (text if at < 0 else text[:at]).rstrip("\n") + "\n\n" + new_head
    body += "".join(p.rstrip("\n") + "\n\n" for p in merged.values())
    with open(doc, "w") as f:
        f.write(body.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
