"""Compares two run directories written by the same config: every checkpoint's datasets and
attributes bit for bit, and the metrics CSV, leaving out what measures time (elapsed_s,
epoch_train_s, samples_per_s and the metrics table's last two columns) and step_times.csv.

usage: same-bits.py OLD_DIR NEW_DIR [NEW_BIN]
Prints each difference; exits 1 when there is one, or when the directories hold different
checkpoints.

With NEW_BIN (the new build's backprop), a config key the old build did not have is not a
difference where the new run's stored config holds it at NEW_BIN's default (`train --help`
says which): the new config text less those lines must be the old text byte for byte, and
each text's fnv1a64 attribute its own hash. Such keys are named once, as a note.
"""
import os
import re
import subprocess
import sys

import h5py
import numpy as np

TIMES = {"elapsed_s", "epoch_train_s", "samples_per_s"}


def raw(v):
    v = np.asarray(v)
    return repr(v.tolist()).encode() if v.dtype == object else v.tobytes()


def items(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                if k not in TIMES:
                    out[f"{name}@{k}"] = raw(v)
            if isinstance(obj, h5py.Dataset):
                v = obj[()]
                if name.endswith("metrics") and getattr(v, "ndim", 0) == 2:
                    v = v[:, :-2]
                out[name] = raw(v)
        for k, v in f.attrs.items():
            out[f"/@{k}"] = raw(v)
        f.visititems(visit)
    return out


def defaults(binary):
    """{(section, key): default text} from `BIN train --help`."""
    text = subprocess.run([binary, "train", "--help"], capture_output=True, text=True).stdout
    out, section = {}, None
    for line in text.splitlines():
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^  (\w+) = .*; default (.*)$", line)
        if m and section:
            out[(section, m.group(1))] = m.group(2).strip()
    return out


def at_default(value, default):
    if value == default or (value == "" and default.startswith("none")):  # an unset path
        return True
    try:
        return float(value) == float(default)
    except ValueError:
        return False


def sections(text):
    """[(header line or None, [lines])] in order."""
    out = [(None, [])]
    for line in text.split("\n"):
        if re.match(r"^\[\w+\]$", line):
            out.append((line, []))
        else:
            out[-1][1].append(line)
    return out


def fnv1a64(data):
    h = 1469598103934665603
    for c in data:
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def without_new_defaults(old, new, known):
    """new's config text less the key lines old lacks that are at their defaults, and the
    keys dropped."""
    keys = {}
    for header, lines in sections(old):
        keys[header] = {ln.split(" = ", 1)[0] for ln in lines if " = " in ln}
    dropped, parts = [], []
    for header, lines in sections(new):
        section = header[1:-1] if header else None
        kept = []
        for ln in lines:
            if " = " in ln:
                key, value = ln.split(" = ", 1)
                default = known.get((section, key))
                if key not in keys.get(header, set()) and default is not None and at_default(
                        value, default):
                    dropped.append(f"{section}.{key}")
                    continue
            kept.append(ln)
        if header is not None and header not in keys and not any(k.strip() for k in kept):
            continue  # a section the old build lacked, all of it at defaults
        parts.append(([header] if header else []) + kept)
    return "\n".join(ln for part in parts for ln in part), dropped


def config_of(path):
    with h5py.File(path, "r") as f:
        if "config" not in f:
            return None, None
        d = f["config"]
        text = d[()]
        text = text.decode() if isinstance(text, bytes) else str(text)
        return text, int(d.attrs["fnv1a64"]) if "fnv1a64" in d.attrs else None


def explain_config(old_path, new_path, known, notes):
    """True when the two stored configs differ only by new keys at their defaults."""
    (a, ha), (b, hb) = config_of(old_path), config_of(new_path)
    if a is None or b is None or a == b:
        return False
    stripped, dropped = without_new_defaults(a, b, known)
    if stripped != a or not dropped:
        return False
    if ha is not None and ha != fnv1a64(a.encode()) or hb is not None and hb != fnv1a64(
            b.encode()):
        return False
    notes.update(dropped)
    return True


def csv_rows(path):
    with open(path) as f:
        return [",".join(line.rstrip("\n").split(",")[:-2]) for line in f]


def main(old, new, new_bin=None):
    bad = 0
    known = defaults(new_bin) if new_bin else {}
    notes = set()
    a = sorted(n for n in os.listdir(old) if n.endswith(".h5"))
    b = sorted(n for n in os.listdir(new) if n.endswith(".h5"))
    if a != b or not a:
        print(f"checkpoints differ: {a} vs {b}")
        return 1
    for name in a:
        x, y = items(os.path.join(old, name)), items(os.path.join(new, name))
        if known and explain_config(os.path.join(old, name), os.path.join(new, name), known, notes):
            for key in ("config", "config@fnv1a64"):
                y[key] = x.get(key)
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                print(f"{name}: {key} differs")
                bad += 1
    if csv_rows(os.path.join(old, "metrics.csv")) != csv_rows(os.path.join(new, "metrics.csv")):
        print("metrics.csv differs")
        bad += 1
    if notes:
        print(f"note: the new config adds {', '.join(sorted(notes))} at the default: not a difference")
    print(f"{old} vs {new}: {len(a)} checkpoints, {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
