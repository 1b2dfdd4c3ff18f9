"""Writes the probe batch the representation methods and the learned detector share.

The paper probes with a batch of the child's fine-tuning data; every zoo model reads
Fashion-MNIST-sized images, so the probe is the first N images of the Fashion-MNIST *test*
split (never used for training in the zoo), scaled to [0, 1] exactly as zoo_data.py scales
training inputs. Shape (N, 784), float32. Usage:
    /usr/bin/python3 test/zoo/make_probe.py --out .cache/zoo/full/probe.npy [--count 128]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_data import FASHION_DIR, _read_idx  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=128)
    args = parser.parse_args()
    images = _read_idx(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784)
    probe = images[: args.count].astype(np.float32) / 255.0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, probe)
    print("probe %s: %d x %d" % (args.out, probe.shape[0], probe.shape[1]))


if __name__ == "__main__":
    main()
