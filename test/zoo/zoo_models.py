"""Architectures, training, pruning, low-rank (LoRA) adapters and weight merging for the model zoo."""
import copy
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    """784 -> h1 -> h2 -> head.  State-dict names: fc1.*, fc2.*, head.*"""

    def __init__(self, num_classes, hidden=(256, 128)):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.head = nn.Linear(hidden[1], num_classes)

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.head(x)


class SmallCNN(nn.Module):
    """conv-BN-relu-pool x2, fc, head.

    State-dict names: features.0.* (conv), features.1.* (BN incl. running stats and
    num_batches_tracked), features.4.* (conv), features.5.* (BN), fc.*, head.*
    """

    def __init__(self, num_classes, channels=(16, 32), fc_dim=64):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(c2 * 7 * 7, fc_dim)
        self.head = nn.Linear(fc_dim, num_classes)

    def forward(self, x):
        x = x.view(x.shape[0], 1, 28, 28)
        x = self.features(x)
        x = F.relu(self.fc(torch.flatten(x, 1)))
        return self.head(x)


# name -> (constructor, kwargs per preset, groups of early layers that may be frozen)
ARCHS = {
    "mlp": {
        "class": "MLP",
        "make": lambda C, cfg: MLP(C, hidden=tuple(cfg["hidden"])),
        "freezable": [["fc1"]],
        "head": ["head.weight", "head.bias"],
        "linear_layers": ["fc1", "fc2", "head"],
        # The same network as a Keras Sequential of Dense layers (auto-generated layer names)
        "keras_layers": [
            ("dense", [("kernel", "fc1.weight", "dense"), ("bias", "fc1.bias", "same")]),
            ("dense_1", [("kernel", "fc2.weight", "dense"), ("bias", "fc2.bias", "same")]),
            ("dense_2", [("kernel", "head.weight", "dense"), ("bias", "head.bias", "same")]),
        ],
    },
    "cnn": {
        "class": "SmallCNN",
        "make": lambda C, cfg: SmallCNN(C, channels=tuple(cfg["channels"]), fc_dim=cfg["fc_dim"]),
        "freezable": [["features.0", "features.1"], ["features.0", "features.1", "features.4", "features.5"]],
        "head": ["head.weight", "head.bias"],
        "linear_layers": ["fc", "head"],
        # The same network as a Keras Sequential with data_format="channels_first", so Flatten
        # sees channel-major features exactly as torch.flatten does and Dense kernels are plain
        # transposes; layers without weights are listed as Keras lists them.
        "keras_layers": [
            ("reshape", []),
            ("conv2d", [("kernel", "features.0.weight", "conv"), ("bias", "features.0.bias", "same")]),
            ("batch_normalization", [("gamma", "features.1.weight", "same"), ("beta", "features.1.bias", "same"),
                                     ("moving_mean", "features.1.running_mean", "same"),
                                     ("moving_variance", "features.1.running_var", "same")]),
            ("activation", []),
            ("max_pooling2d", []),
            ("conv2d_1", [("kernel", "features.4.weight", "conv"), ("bias", "features.4.bias", "same")]),
            ("batch_normalization_1", [("gamma", "features.5.weight", "same"), ("beta", "features.5.bias", "same"),
                                       ("moving_mean", "features.5.running_mean", "same"),
                                       ("moving_variance", "features.5.running_var", "same")]),
            ("activation_1", []),
            ("max_pooling2d_1", []),
            ("flatten", []),
            ("dense", [("kernel", "fc.weight", "dense"), ("bias", "fc.bias", "same")]),
            ("dense_1", [("kernel", "head.weight", "dense"), ("bias", "head.bias", "same")]),
        ],
    },
}


def build(arch, num_classes, cfg):
    return ARCHS[arch]["make"](num_classes, cfg)


def _set_frozen_modes(model, frozen):
    """Frozen modules stay in eval mode (BN running stats untouched)."""
    for name, mod in model.named_modules():
        if any(name == f or name.startswith(f + ".") for f in frozen):
            mod.eval()


def evaluate(model, x, y, batch=200):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            xb = torch.from_numpy(x[i:i + batch])
            pred = model(xb).argmax(1).numpy()
            correct += int((pred == y[i:i + batch]).sum())
    return correct / max(1, len(y))


def make_optimizer(params, hp):
    if hp["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    if hp["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=hp["lr"], momentum=hp.get("momentum") or 0.0,
                               weight_decay=hp["weight_decay"])
    raise ValueError(hp["optimizer"])


def train(model, x, y, hp, seed, frozen=(), on_step=None):
    """Plain minibatch training. hp: optimizer, lr, momentum, weight_decay, epochs,
    batch_size, optional max_steps. on_step(steps_done, loss), if given, runs after every
    optimizer step (checkpoints of one run are taken there). Returns (optimizer, steps_done)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.startswith(f + ".") for f in frozen))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, hp)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    n = len(yt)
    bs = hp["batch_size"]
    steps = 0
    max_steps = hp.get("max_steps")
    for _ in range(hp["epochs"]):
        model.train()
        _set_frozen_modes(model, frozen)
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            b = perm[i:i + bs]
            if len(b) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xt[b]), yt[b])
            loss.backward()
            opt.step()
            steps += 1
            if on_step is not None:
                on_step(steps, float(loss))
            if max_steps and steps >= max_steps:
                break
        if max_steps and steps >= max_steps:
            break
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return opt, steps


# ---------------------------------------------------------------------- derived copies
def to_fp16(state):
    return {k: (v.half() if v.is_floating_point() else v.clone()) for k, v in state.items()}


def prune_magnitude(state, ratio):
    """Layer-wise unstructured magnitude pruning of every weight tensor with dim >= 2
    (linear and conv weights, head included). Everything else copied unchanged."""
    out = {}
    for k, v in state.items():
        v = v.clone()
        if k.endswith("weight") and v.dim() >= 2:
            flat = v.abs().flatten()
            n_zero = int(round(ratio * flat.numel()))
            if n_zero > 0:
                thresh_idx = torch.argsort(flat, stable=True)[:n_zero]
                vf = v.flatten()
                vf[thresh_idx] = 0.0
                v = vf.view_as(v)
        out[k] = v.contiguous()
    return out


class LoRALinear(nn.Module):
    def __init__(self, base, rank, alpha, g):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        bound = 1.0 / math.sqrt(base.in_features)
        with torch.no_grad():
            self.A.uniform_(-bound, bound, generator=g)

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.A), self.B)


def lora_train(model, targets, x, y, hp, seed, rank=4, alpha=8.0):
    """Train rank-`rank` adapters (B·A) on the given linear layers with the base frozen
    (BN kept in eval mode, so buffers are untouched). Returns ({target: (A, B)}, steps)
    with A [rank, in_features] and B [out_features, rank], as PEFT stores them."""
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
    wrappers = {}
    for t in targets:
        base = m.get_submodule(t)
        w = LoRALinear(base, rank, alpha, g)
        parent_name, _, attr = t.rpartition(".")
        parent = m.get_submodule(parent_name) if parent_name else m
        setattr(parent, attr, w)
        wrappers[t] = w
    params = [p for w in wrappers.values() for p in (w.A, w.B)]
    opt = make_optimizer(params, hp)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n, bs, steps = len(yt), hp["batch_size"], 0
    for _ in range(hp["epochs"]):
        m.eval()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            b = perm[i:i + bs]
            if len(b) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(xt[b]), yt[b]).backward()
            opt.step()
            steps += 1
    factors = {t: (w.A.detach().clone().contiguous(), w.B.detach().clone().contiguous())
               for t, w in wrappers.items()}
    return factors, steps


def apply_lora(state, factors, rank, alpha):
    """W <- W + (alpha/rank)·B·A for each adapted layer. Returns (merged state dict,
    {weight name: ||delta|| / ||W||})."""
    scale = alpha / rank
    merged = {k: v.clone() for k, v in state.items()}
    rel = {}
    with torch.no_grad():
        for t, (a, b) in factors.items():
            delta = scale * (b @ a)
            key = t + ".weight"
            rel[key] = float(delta.norm() / merged[key].norm())
            merged[key] = (merged[key] + delta).contiguous()
    return merged, rel


def lora_merge(model, targets, x, y, hp, seed, rank=4, alpha=8.0):
    """Train LoRA adapters (lora_train) and merge them into the base's weights.
    Returns (merged state dict, steps, delta-norm info)."""
    factors, steps = lora_train(model, targets, x, y, hp, seed, rank=rank, alpha=alpha)
    merged, rel = apply_lora(model.state_dict(), factors, rank, alpha)
    return merged, steps, rel


# ---------------------------------------------------------------------- merges
def weighted_average(states, weights):
    """Sum of w_i · state_i over float tensors (a "model soup" when the weights sum to 1).
    Integer buffers (BN num_batches_tracked) come from the most heavily weighted state."""
    main = states[max(range(len(weights)), key=lambda i: weights[i])]
    out = {}
    for k, v in main.items():
        if v.is_floating_point():
            out[k] = sum(w * s[k] for w, s in zip(weights, states)).contiguous()
        else:
            out[k] = v.clone()
    return out


def task_arithmetic(base, states, lambdas):
    """base + Σ λ_i (state_i - base) over float tensors (Ilharco et al., task vectors).
    Integer buffers come from the most heavily weighted state."""
    main = states[max(range(len(lambdas)), key=lambda i: lambdas[i])]
    out = {}
    for k, v in main.items():
        if v.is_floating_point():
            acc = base[k].clone()
            for lam, s in zip(lambdas, states):
                acc = acc + lam * (s[k] - base[k])
            out[k] = acc.contiguous()
        else:
            out[k] = v.clone()
    return out


def timed(fn, *a, **kw):
    t = time.time()
    r = fn(*a, **kw)
    return r, time.time() - t
