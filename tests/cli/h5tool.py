"""Small HDF5 operations for the checkpoint tests, done outside backprop with h5py.

usage: h5tool.py forward CKPT DATA.h5 OUT.npy   forward pass in numpy from the file alone
       h5tool.py flip CKPT                      flip one byte inside /model/layer_0/W's data
       h5tool.py set-version CKPT N             overwrite the root format_version attribute
       h5tool.py heap-flips CKPT DIR            one copy per byte of the global heap, flipped
       h5tool.py state CKPT                     print epoch batch_in_epoch global_step
       h5tool.py metrics-epochs CSV             print the epoch column
"""
import csv
import sys

import h5py
import numpy as np

ACTIVATIONS = {
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "linear": lambda z: z,
}


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def forward(ckpt, data, out):
    with h5py.File(ckpt, "r") as f:
        model = f["model"]
        hidden, output = text(model.attrs["hidden"]), text(model.attrs["output"])
        layers = [(model[f"layer_{i}"]["W"][()].astype(np.float64),
                   model[f"layer_{i}"]["b"][()].astype(np.float64))
                  for i in range(len(model.attrs["layers"]) - 1)]
    with h5py.File(data, "r") as f:
        a = f["X"][()].astype(np.float64)
    for i, (W, b) in enumerate(layers):
        z = a @ W.T + b
        last = i == len(layers) - 1
        a = (softmax(z) if output == "softmax" else ACTIVATIONS[output](z)) if last else ACTIVATIONS[hidden](z)
    np.save(out, a)


def flip(ckpt):
    with h5py.File(ckpt, "r") as f:
        info = f["model/layer_0/W"].id.get_chunk_info(0)
    offset = info.byte_offset + info.size // 2
    with open(ckpt, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x10]))


def heap_flips(ckpt, out):
    """HDF5's global heap collection ("GCOL", where variable-length strings live): a copy
    of the file with each of its first 1024 bytes flipped in turn (the strings sit at its
    start; the rest is free space)."""
    data = open(ckpt, "rb").read()
    start = data.find(b"GCOL")
    if start < 0:
        sys.exit("no global heap in " + ckpt)
    size = int.from_bytes(data[start + 8:start + 16], "little")  # collection size
    for offset in range(start, min(start + size, start + 1024, len(data))):
        flipped = bytearray(data)
        flipped[offset] ^= 0x5A
        with open(f"{out}/flip-{offset}.h5", "wb") as fh:
            fh.write(flipped)


def main(argv):
    cmd = argv[1]
    if cmd == "forward":
        forward(argv[2], argv[3], argv[4])
    elif cmd == "flip":
        flip(argv[2])
    elif cmd == "heap-flips":
        heap_flips(argv[2], argv[3])
    elif cmd == "set-version":
        with h5py.File(argv[2], "r+") as f:
            f.attrs["format_version"] = np.int32(int(argv[3]))
    elif cmd == "state":
        with h5py.File(argv[2], "r") as f:
            t = f["train"].attrs
            print(int(t["epoch"]), int(t["batch_in_epoch"]), int(t["global_step"]))
    elif cmd == "metrics-epochs":
        with open(argv[2]) as fh:
            print(" ".join(row["epoch"] for row in csv.DictReader(fh)))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
