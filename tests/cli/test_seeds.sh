#!/usr/bin/env bash
# The seed experiments' configs reach what their seeds report: XOR fits its targets,
# the relu XOR fits, the line fit recovers slope 3 and intercept 4. (The Fashion-MNIST
# seed configs take minutes: scripts/check-seeds.sh runs them.)
source "$(dirname "$0")/lib.sh"

fits() { # fits CKPT DATA: every output within 0.1 of its target
    "$BP" predict --checkpoint "$1" --data "$2" --out pred.h5 --force >/dev/null &&
        $PY - "$2" <<'PY'
import sys, h5py, numpy as np
targets = {"builtin:xor": [0, 1, 1, 0], "builtin:xor_signed": [1, 0, 0, 1]}[sys.argv[1]]
out = h5py.File("pred.h5", "r")["outputs"][()][:, 0]
print("outputs", out)
sys.exit(0 if np.max(np.abs(out - targets)) < 0.1 else 1)
PY
}

check "xor trains" "$BP" train "$SRC/configs/xor.ini" --set checkpoint.dir=xor
check "xor fits" fits xor/latest.h5 builtin:xor
check "xor-relu trains" mpi 2 train "$SRC/configs/xor-relu.ini" --set checkpoint.dir=xor-relu
check "xor-relu fits" fits xor-relu/latest.h5 builtin:xor_signed
check "line-fit trains" mpi 2 train "$SRC/configs/line-fit.ini" --set checkpoint.dir=line
check "slope 3, intercept 4" $PY - <<'PY'
import sys, h5py
with h5py.File("line/latest.h5", "r") as f:
    w = float(f["model/layer_0/W"][0, 0]); b = float(f["model/layer_0/b"][0])
print(f"slope {w:.4f} intercept {b:.4f}")
sys.exit(0 if abs(w - 3) < 0.1 and abs(b - 4) < 0.1 else 1)
PY
finish
