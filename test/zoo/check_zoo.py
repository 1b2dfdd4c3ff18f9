#!/usr/bin/python3
"""Self-check for a generated zoo: every checkpoint loads back (torch.load / own
safetensors, ONNX, Keras HDF5, NumPy and GGUF readers), tensor names normalise to the
architecture's state dict, every typed relation holds (conversions equal their source,
quantizations stay within a step, merges equal their stated combination, adapters have
their rank, run checkpoints follow each other), truth.json is consistent, and a naive
weight-distance baseline is reported for orientation.

Usage: /usr/bin/python3 test/zoo/check_zoo.py DIR
Exit status 0 when all checks pass.
"""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


RELATIONS = ("finetune", "fp16", "pruned", "lowrank-merge", "converted", "quantized", "adapter", "merged", "run")
# |dequantized - source| / step: Q8_0 rounds to the nearest step, Q4_0 clamps its top code to
# 7 steps, so an extreme value of the other sign can be a whole step off; the margin covers
# the scale's own rounding to float16 (2^-11 relative, times up to 127 steps).
QUANT_TOLERANCE = {"Q8_0": 0.57, "Q4_0": 1.01}


def load_weights(m, p, T, loaded, err):
    """The model's weights under torch's state-dict names and shapes, read from its file in
    whatever format it has; for an adapter, its base with the adapter merged in."""
    import torch
    import zoo_formats
    import zoo_io
    import zoo_models

    fmt = m["format"]
    derive = m["derive"] or {}
    if fmt == "safetensors":
        sd, meta = zoo_io.read_safetensors(p)
        if "__metadata__" in json.dumps(meta or {}):
            err("bad metadata")
        return sd
    if fmt == "onnx":
        opsets, tensors = zoo_formats.read_onnx(p)
        if opsets.get("") != derive["opset"]:
            err("%s: ONNX opset %s, truth says %s" % (m["path"], opsets.get(""), derive["opset"]))
        missing = set(derive["tensor_map"].values()) - set(tensors)
        if missing:
            err("%s: initializers missing %s" % (m["path"], sorted(missing)))
            return {}
        return {k: torch.from_numpy(tensors[name]) for k, name in derive["tensor_map"].items()}
    if fmt == "keras-h5":
        attrs, layers, arrays = zoo_formats.read_keras_h5(p)
        table = zoo_models.ARCHS[m["architecture"]]["keras_layers"]
        if zoo_formats.as_text(attrs.get("backend", "")) != "tensorflow" or "keras_version" not in attrs:
            err("%s: Keras root attributes %s" % (m["path"], sorted(attrs)))
        if list(layers) != [name for name, _ in table]:
            err("%s: layer_names %s" % (m["path"], list(layers)))
        for name, weights in table:
            if layers.get(name) != ["%s/%s:0" % (name, w) for w, _, _ in weights]:
                err("%s: weight_names of %s: %s" % (m["path"], name, layers.get(name)))
        out = {}
        for k, where in derive["tensor_map"].items():
            if where not in arrays:
                err("%s: no dataset %s" % (m["path"], where))
                continue
            out[k] = torch.from_numpy(zoo_formats.from_keras(arrays[where], derive["layout"][k]))
        return out
    if fmt == "npz":
        return {k: torch.from_numpy(v) for k, v in zoo_formats.read_npz(p).items()}
    if fmt == "gguf":
        meta, tensors = zoo_formats.read_gguf(p)
        for key in ("general.architecture", "general.name", "general.alignment"):
            if key not in meta:
                err("%s: GGUF metadata has no %s" % (m["path"], key))
        if {k: t["type"] for k, t in tensors.items()} != derive["tensor_types"]:
            err("%s: GGUF tensor types differ from the truth" % m["path"])
        loaded[m["path"] + "#step"] = {k: torch.from_numpy(t["step"]) for k, t in tensors.items()}
        return {k: torch.from_numpy(t["values"]) for k, t in tensors.items()}
    if fmt == "peft-adapter":
        factors, meta = zoo_io.read_safetensors(p)
        loaded[m["path"] + "#factors"] = factors
        base = loaded.get(m["parent"])
        if base is None:
            err("%s: base not loaded" % m["path"])
            return {}
        scale = derive["alpha"] / derive["rank"]
        out = {k: v.clone() for k, v in base.items()}
        for t in derive["targets"]:
            layer = t[:-len(".weight")]
            a = factors.get(zoo_formats.peft_key(layer, "A"))
            b = factors.get(zoo_formats.peft_key(layer, "B"))
            if a is None or b is None:
                err("%s: LoRA factors of %s missing" % (m["path"], layer))
                continue
            out[t] = out[t] + scale * (b @ a)
        return out
    raw = torch.load(p, map_location="cpu")
    if fmt == "ckpt-lightning":
        for k in ("state_dict", "optimizer_states", "epoch", "hyper_parameters"):
            if k not in raw:
                err("%s: lightning key %s missing" % (m["path"], k))
        if not all(k.startswith("model.") for k in raw["state_dict"]):
            err("%s: lightning prefix" % m["path"])
    elif m["key_prefix"] and not all(k.startswith(m["key_prefix"]) for k in raw):
        err("%s: expected prefix %s" % (m["path"], m["key_prefix"]))
    return zoo_io.load_state_dict_any(p)


def check_relation(m, sd, by_path, loaded, mdir, err):
    """What each typed relation promises about the weights, against the parents' files."""
    import numpy as np
    import torch
    import zoo_formats

    rel, derive, path = m["relation"], m["derive"] or {}, m["path"]
    parent = loaded.get(m["parent"])
    if rel in ("converted", "quantized", "adapter", "merged", "run") and parent is None:
        err("%s: parent %s not loaded" % (path, m["parent"]))
        return
    if rel == "converted":
        for k, v in sd.items():
            if not torch.equal(v, parent[k]):
                err("%s: %s differs from the source after undoing %s" % (path, k, derive["layout"][k]))
    elif rel == "quantized":
        steps = loaded[path + "#step"]
        bound = QUANT_TOLERANCE[derive["quantization"]]
        for k, v in sd.items():
            if derive["tensor_types"][k] == "F32":
                if not torch.equal(v, parent[k]):
                    err("%s: F32 tensor %s differs from the source" % (path, k))
                continue
            over = (v - parent[k]).abs() - bound * steps[k]
            if float(over.max()) > 1e-7:
                err("%s: %s dequantizes %.3g beyond %.2f step" % (path, k, float(over.max()), bound))
    elif rel == "merged":
        weights, parents = m["merge_weights"], m["parents"]
        if weights != derive["weights"] or len(parents) != 2 or len(weights) != 2:
            err("%s: merge weights %s / %s with parents %s" % (path, weights, derive["weights"], parents))
            return
        if m["parent"] != parents[weights.index(max(weights))]:
            err("%s: parent is not the parent with the larger weight" % path)
        ps = [loaded[p] for p in parents]
        for p in parents:
            q = by_path[p]
            if (q["architecture"], q["family"], q["generation"]) != (m["architecture"], m["family"], m["generation"] - 1):
                err("%s: merge parent %s of another architecture, family or generation" % (path, p))
        if derive["method"] == "task-arithmetic":
            if any(by_path[p]["parent"] != derive["base"] for p in parents):
                err("%s: the task-arithmetic base is not both parents' parent" % path)
                return
            base = loaded[derive["base"]]
        for k, v in sd.items():
            if not v.is_floating_point():
                continue
            if derive["method"] == "weighted-average":
                want = weights[0] * ps[0][k] + weights[1] * ps[1][k]
            else:
                want = base[k] + weights[0] * (ps[0][k] - base[k]) + weights[1] * (ps[1][k] - base[k])
            if not torch.allclose(v, want, rtol=1e-5, atol=1e-6):
                err("%s: %s is not the stated %s" % (path, k, derive["method"]))
    elif rel == "adapter":
        factors = loaded[path + "#factors"]
        r = derive["rank"]
        want_keys = {zoo_formats.peft_key(t[:-len(".weight")], f) for t in derive["targets"] for f in "AB"}
        if set(factors) != want_keys:
            err("%s: adapter tensors %s" % (path, sorted(factors)))
            return
        for t in derive["targets"]:
            layer = t[:-len(".weight")]
            a, b = factors[zoo_formats.peft_key(layer, "A")], factors[zoo_formats.peft_key(layer, "B")]
            out_f, in_f = parent[t].shape
            if list(a.shape) != [r, in_f] or list(b.shape) != [out_f, r]:
                err("%s: %s factors %s, %s for a [%d, %d] weight" % (path, layer, list(a.shape), list(b.shape), out_f, in_f))
                continue
            delta = (derive["alpha"] / r) * (b.double() @ a.double())
            if int(np.linalg.matrix_rank(delta.numpy())) != r:
                err("%s: %s update has rank %d, not %d" % (path, layer, np.linalg.matrix_rank(delta.numpy()), r))
            relnorm = float(delta.norm() / parent[t].double().norm())
            if abs(relnorm - derive["relative_delta_norm"][t]) > 1e-4:
                err("%s: %s relative update %.5f, truth %.5f" % (path, layer, relnorm, derive["relative_delta_norm"][t]))
        config = read_json(os.path.join(mdir, os.path.dirname(path), "adapter_config.json"), err)
        if config is None:
            return
        want = {"peft_type": "LORA", "r": r, "lora_alpha": derive["alpha"],
                "target_modules": sorted(t[:-len(".weight")] for t in derive["targets"])}
        if {k: config.get(k) for k in want} != want:
            err("%s: adapter_config.json %s" % (path, {k: config.get(k) for k in want}))
        declared = derive["base_model_name_or_path"]
        if config.get("base_model_name_or_path") != declared:
            err("%s: base_model_name_or_path %r, truth %r" % (path, config.get("base_model_name_or_path"), declared))
        elif declared is not None and os.path.normpath(os.path.join(os.path.dirname(path), declared)) != os.path.dirname(m["parent"]):
            err("%s: base_model_name_or_path %s is not the base's folder" % (path, declared))
    if m["run"] is not None:
        check_run_member(m, sd, parent, mdir, err)


def read_json(path, err):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        err("%s: %s" % (path, e))
        return None


def check_run_member(m, sd, parent, mdir, err):
    import torch

    run, path = m["run"], m["path"]
    step_dir = os.path.dirname(path)
    if run["checkpoints"][run["index"]] != path or os.path.basename(step_dir) != "checkpoint-%d" % run["global_step"]:
        err("%s: not checkpoint-%d of its run" % (path, run["global_step"]))
    want_parent = run["start"] if run["index"] == 0 else run["checkpoints"][run["index"] - 1]
    want_relation = "finetune" if run["index"] == 0 else "run"
    if m["parent"] != want_parent or m["relation"] != want_relation:
        err("%s: run member %d has parent %s, relation %s" % (path, run["index"], m["parent"], m["relation"]))
    state = read_json(os.path.join(mdir, step_dir, "trainer_state.json"), err)
    if state is None:
        return
    steps = [e["step"] for e in state["log_history"]]
    if state["global_step"] != run["global_step"] or state["save_steps"] != run["save_steps"]:
        err("%s: trainer_state global_step %s save_steps %s" % (path, state["global_step"], state["save_steps"]))
    if steps != sorted(set(steps)) or not steps or steps[-1] > state["global_step"]:
        err("%s: log_history steps %s" % (path, steps))
    if all(torch.equal(v, parent[k]) for k, v in sd.items()):
        err("%s: identical to the checkpoint before it" % path)


def main(argv):
    import torch
    import zoo_formats
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
    listed = set(by_path) | {s for m in T["models"] for s in m["sidecar_files"]}
    if on_disk != listed:
        err("files on disk != truth models and their sidecars: extra %s missing %s"
            % (sorted(on_disk - listed), sorted(listed - on_disk)))

    from make_zoo import LEAKY_NAME as leak
    generic = {f for v in zoo_io.FORMATS.values() for f in v[0]} | {f for v in zoo_formats.FORMATS.values() for f in v[0]}
    feats = {}
    loaded = {}  # path -> weights under torch names (parents are listed before their children)
    for m in T["models"]:
        p = os.path.join(mdir, m["path"])
        if not os.path.isfile(p):
            err("missing file %s" % m["path"])
            continue
        # random directory components must not spell anything; file names come from the
        # format tables (generic names such as params.safetensors, last.ckpt, model.onnx)
        comps = m["path"].split("/")
        if comps[-1] not in generic or any(leak.search(c) for c in comps[:-1] if c != "checkpoints"):
            err("path may leak lineage info: %s" % m["path"])
        for side in m["sidecar_files"]:
            if os.path.dirname(side) != os.path.dirname(m["path"]) or os.path.basename(side) not in zoo_formats.SIDECAR_NAMES:
                err("%s: unexpected sidecar %s" % (m["path"], side))
        with open(p, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != m["sha256"]:
                err("sha256 mismatch %s" % m["path"])
        sd = load_weights(m, p, T, loaded, err)
        arch = T["architectures"][m["architecture"]]
        shapes = arch["tensor_shapes_10_classes"]
        dropped = set((m["derive"] or {}).get("dropped", [])) if m["relation"] in ("converted", "quantized") else set()
        if set(sd) != set(shapes) - dropped:
            err("%s: keys %s != %s" % (m["path"], sorted(sd), sorted(set(shapes) - dropped)))
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
        loaded[m["path"]] = sd
        if m["relation"] == "pruned":
            z = sum(int((v == 0).sum()) for k, v in sd.items() if k.endswith("weight") and v.dim() >= 2)
            t = sum(v.numel() for k, v in sd.items() if k.endswith("weight") and v.dim() >= 2)
            if not 0.28 <= z / t <= 0.52:
                err("%s: zero fraction %.3f" % (m["path"], z / t))
        check_relation(m, sd, by_path, loaded, mdir, err)
        # an adapter holds no full weights: the naive baseline has nothing of its own to compare
        if m["relation"] != "adapter":
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
            if m["relation"] not in RELATIONS:
                err("%s: relation %s" % (m["path"], m["relation"]))
            if m["parent"] not in m["parents"] or (len(m["parents"]) > 1) != (m["relation"] == "merged"):
                err("%s: parents %s" % (m["path"], m["parents"]))
    for q in T["queries"]:
        cands = [c["path"] for c in q["candidates"]]
        if q["true_parent"] not in cands or not set(q["true_parents"]) <= set(cands):
            err("query %s: parent not in candidates" % q["query"])
        if q["true_parents"] != by_path[q["query"]]["parents"]:
            err("query %s: true_parents" % q["query"])
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
    baseline_queries = [q for q in T["queries"] if q["query"] in feats]
    for q in baseline_queries:
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
        if x["descendant"] not in feats:
            continue
        h = nearest(x["descendant"], x["candidates"]) == x["true_ancestor"]
        s = by_gap.setdefault(x["generation_gap"], [0, 0])
        s[0] += h
        s[1] += 1
    print("checkpoints: %d, queries: %d, cross-generation: %d"
          % (len(T["models"]), len(T["queries"]), len(T["cross_generation"])))
    print("naive L2 baseline (adapters left out): closed-set %d/%d; cross-generation by gap: %s"
          % (hit, len(baseline_queries), ", ".join("%d: %d/%d" % (k, v[0], v[1]) for k, v in sorted(by_gap.items()))))
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
