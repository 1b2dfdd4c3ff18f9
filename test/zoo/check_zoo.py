#!/usr/bin/python3
"""Self-check for a generated zoo: every checkpoint loads back (torch.load / own
safetensors reader), tensor names normalise to the architecture's state dict, truth.json
is consistent, and a naive weight-distance baseline is reported for orientation.

Usage: /usr/bin/python3 test/zoo/check_zoo.py DIR
Exit status 0 when all checks pass.
"""
import hashlib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv):
    import torch
    import zoo_io

    out = argv[1] if len(argv) > 1 else "/tmp/zoo-small"
    with open(os.path.join(out, "truth.json")) as f:
        T = json.load(f)
    mdir = os.path.join(out, T["models_dir"])
    errors = []

    def err(msg):
        errors.append(msg)

    by_path = {m["path"]: m for m in T["models"]}
    if len(by_path) != len(T["models"]):
        err("duplicate paths")
    on_disk = set()
    for root, _, files in os.walk(mdir):
        for fn in files:
            on_disk.add(os.path.relpath(os.path.join(root, fn), mdir))
    if on_disk != set(by_path):
        err("files on disk != truth models: extra %s missing %s"
            % (sorted(on_disk - set(by_path)), sorted(set(by_path) - on_disk)))

    from make_zoo import LEAKY_NAME as leak
    feats = {}
    for m in T["models"]:
        p = os.path.join(mdir, m["path"])
        if not os.path.isfile(p):
            err("missing file %s" % m["path"])
            continue
        # random directory components must not spell anything; file names come from
        # zoo_io.FORMATS (generic names such as params.safetensors, last.ckpt)
        comps = m["path"].split("/")
        generic = {f for v in zoo_io.FORMATS.values() for f in v[0]}
        if comps[-1] not in generic or any(leak.search(c) for c in comps[:-1] if c != "checkpoints"):
            err("path may leak lineage info: %s" % m["path"])
        with open(p, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != m["sha256"]:
                err("sha256 mismatch %s" % m["path"])
        # raw structure per format
        if m["format"] == "safetensors":
            sd, meta = zoo_io.read_safetensors(p)
            if "__metadata__" in json.dumps(meta or {}):
                err("bad metadata")
        else:
            raw = torch.load(p, map_location="cpu")
            if m["format"] == "ckpt-lightning":
                for k in ("state_dict", "optimizer_states", "epoch", "hyper_parameters"):
                    if k not in raw:
                        err("%s: lightning key %s missing" % (m["path"], k))
                if not all(k.startswith("model.") for k in raw["state_dict"]):
                    err("%s: lightning prefix" % m["path"])
            elif m["key_prefix"] and not all(k.startswith(m["key_prefix"]) for k in raw):
                err("%s: expected prefix %s" % (m["path"], m["key_prefix"]))
            sd = zoo_io.load_state_dict_any(p)
        arch = T["architectures"][m["architecture"]]
        shapes = arch["tensor_shapes_10_classes"]
        if set(sd) != set(shapes):
            err("%s: keys %s != %s" % (m["path"], sorted(sd), sorted(shapes)))
            continue
        for k, v in sd.items():
            exp = list(shapes[k])
            if k in arch["head_tensors"]:
                exp[0] = m["task"]["num_classes"]
            if list(v.shape) != exp:
                err("%s: %s shape %s != %s" % (m["path"], k, list(v.shape), exp))
            if v.is_floating_point():
                want = torch.float16 if m["dtype"] == "float16" else torch.float32
                if v.dtype != want:
                    err("%s: %s dtype %s" % (m["path"], k, v.dtype))
        if m["relation"] == "pruned":
            z = sum(int((v == 0).sum()) for k, v in sd.items() if k.endswith("weight") and v.dim() >= 2)
            t = sum(v.numel() for k, v in sd.items() if k.endswith("weight") and v.dim() >= 2)
            if not 0.28 <= z / t <= 0.52:
                err("%s: zero fraction %.3f" % (m["path"], z / t))
        feats[m["path"]] = torch.cat([sd[k].float().flatten() for k in sorted(sd)
                                      if k not in arch["head_tensors"] and sd[k].is_floating_point()
                                      and "running" not in k])

    # ---- truth consistency
    for m in T["models"]:
        g = m["generation"]
        if not 1 <= g <= 4:
            err("%s: generation %d out of G1..G4" % (m["path"], g))
        if m["parent"] is None:
            if g != 1 or m["relation"] is not None:
                err("%s: root with generation %d relation %s" % (m["path"], g, m["relation"]))
        else:
            par = by_path.get(m["parent"])
            if par is None:
                err("%s: parent missing" % m["path"])
                continue
            if par["generation"] != g - 1 or par["architecture"] != m["architecture"]:
                err("%s: parent generation/arch mismatch" % m["path"])
            if m["path"] not in par["children"]:
                err("%s: not in parent's children" % m["path"])
            if m["relation"] not in ("finetune", "fp16", "pruned", "lowrank-merge"):
                err("%s: relation %s" % (m["path"], m["relation"]))
    for q in T["queries"]:
        cands = [c["path"] for c in q["candidates"]]
        if q["true_parent"] not in cands:
            err("query %s: parent not in candidates" % q["query"])
        if q["query"] in cands or len(set(cands)) != len(cands):
            err("query %s: bad candidate set" % q["query"])
        if by_path[q["query"]]["parent"] != q["true_parent"]:
            err("query %s: wrong parent" % q["query"])
        for c in q["candidates"]:
            cm = by_path[c["path"]]
            if cm["architecture"] != q["architecture"]:
                err("query %s: candidate of other architecture" % q["query"])
            if c["generation_gap"] != q["generation"] - cm["generation"]:
                err("query %s: gap" % q["query"])
    for x in T["cross_generation"]:
        if x["true_ancestor"] not in x["candidates"]:
            err("cross %s: ancestor not in candidates" % x["descendant"])
        if x["true_ancestor"] not in by_path[x["descendant"]]["ancestors"]:
            err("cross %s: not an ancestor" % x["descendant"])
        if any(by_path[c]["generation"] != x["ancestor_generation"] for c in x["candidates"]):
            err("cross %s: candidate generation" % x["descendant"])

    # ---- naive baseline (orientation only): nearest candidate by feature-weight L2
    def nearest(q, cands):
        fq = feats[q]
        best = min(cands, key=lambda c: float((feats[c] - fq).norm()))
        return best
    hit = 0
    misses = {}
    for q in T["queries"]:
        guess = nearest(q["query"], [c["path"] for c in q["candidates"]])
        if guess == q["true_parent"]:
            hit += 1
        else:
            k = [c["kind"] for c in q["candidates"] if c["path"] == guess][0]
            key = "%s query -> %s" % (q["role"] if q["role"] != "derived" else q["relation"], k)
            misses[key] = misses.get(key, 0) + 1
    if misses:
        print("naive L2 misses: %s" % ", ".join("%s: %d" % kv for kv in sorted(misses.items())))
    by_gap = {}
    for x in T["cross_generation"]:
        h = nearest(x["descendant"], x["candidates"]) == x["true_ancestor"]
        s = by_gap.setdefault(x["generation_gap"], [0, 0])
        s[0] += h
        s[1] += 1
    print("checkpoints: %d, queries: %d, cross-generation: %d"
          % (len(T["models"]), len(T["queries"]), len(T["cross_generation"])))
    print("naive L2 baseline: closed-set %d/%d; cross-generation by gap: %s"
          % (hit, len(T["queries"]), ", ".join("%d: %d/%d" % (k, v[0], v[1]) for k, v in sorted(by_gap.items()))))
    hs = [m for m in T["models"] if m["role"] == "hard-sibling"]
    if hs:
        dists = [float((feats[m["path"]] - feats[m["parent"]]).norm() / feats[m["parent"]].norm()) for m in hs]
        ft = [m for m in T["models"] if m["role"] == "finetune" and m["generation"] == 2]
        d2 = [float((feats[m["path"]] - feats[m["parent"]]).norm() / feats[m["parent"]].norm()) for m in ft]
        print("relative feature-weight change vs parent: hard siblings %.4f..%.4f, ordinary G2 fine-tunes %.4f..%.4f"
              % (min(dists), max(dists), min(d2), max(d2)))
    if errors:
        print("FAILED: %d problems" % len(errors))
        for e in errors[:50]:
            print("  " + e)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
