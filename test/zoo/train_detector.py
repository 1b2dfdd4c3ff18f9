#!/usr/bin/python3
"""Trains the learned lineage detector of Neural Lineage (Yu & Wang, CVPR 2024, approach 2;
docs/method.md §3) on a model zoo made by make_zoo.py, exports it to ONNX for the engine and
writes the fixtures the TypeScript tests compare against.

Usage (what `npm run train-detector` runs, after building the zoos and their probes):
    /usr/bin/python3 test/zoo/train_detector.py --zoo .cache/zoo/full \
        --train-zoo .cache/zoo/small-seed1 --train-zoo .cache/zoo/small-seed2 --train-zoo .cache/zoo/small-seed3 \
        --extra-test-zoo .cache/zoo/small --out server/src/engine/detector --fixtures test/fixtures/detector

Each zoo directory needs truth.json, models/ and probe.npy (make_zoo.py, make_probe.py); the
seed-1..3 zoos are `make_zoo.py --preset small --seed N`. About 2-3 minutes on 2 CPU cores.

What the detector sees, per candidate parent i of a child c (server/src/engine/detector/
detectorInputs.ts builds the same tokens in TypeScript, bit for bit up to float32 rounding):
- one weight token per 2-D weight matrix of the feature extractor (everything but the head;
  conv kernels reshaped to out x (in*kh*kw)) and one feature token for the feature matrices
  F = input of the head (after its ReLU) on the first PROBE_ROWS probe images;
- a token is a 3-channel TOKEN_SIZE x TOKEN_SIZE image: the parent's matrix, the child's matrix
  and log(DIFFERENCE_FLOOR + |child - parent|), each matrix resampled to the grid
  (resample_to_grid) and divided by the RMS of the child's matrix. The paper's 2-channel
  (parent, child) image is the first two channels. The third is added because area averaging
  cancels the sign-varying fine-tuning update inside each cell, so a 1x1 conv over the first
  two channels only sees a shrunken difference; the cell mean of |difference| keeps how far the
  child moved in every region of the matrix, which is what separates the parent from siblings
  and grandparents, and its logarithm makes the ratios between candidates equally visible at
  every scale (see DIFFERENCE_FLOOR). Dividing by the child's RMS makes the tokens comparable
  across layers and models of different scales.

The network (LineageDetector): a weight encoder and a feature encoder (1x1 conv + ReLU, 3x3
conv + BatchNorm + ReLU, global average pooling to an EMBEDDING-dim token), a 2-layer
transformer over [CLS, weight tokens, feature token] per candidate without positional
encoding (the token set is unordered, so the caller's layer order does not matter), and a
linear score of the CLS output. Candidates are scored independently; a softmax across the
candidates plus a learnable "no parent" logit gives the probabilities, trained with
cross-entropy. Any number of candidates and of weight tokens work: training pads both and
masks the padding.

Split by child: whole families of the main zoo are held out for validation and test, so
neither their models nor their lineage is ever seen in training; every family of the extra
test zoo (the small preset, seed 0, which the engine's tests use) is held out too. Training
also uses every family of the --train-zoo zoos (the small preset with other seeds: other
models, and MLPs of other widths than the full preset's). The true answer of a training
example is the nearest ancestor of the child among the sampled candidates (the parent when
present), or "no parent" when no ancestor was sampled. Chosen on validation: the
log-difference channel (with only the paper's two channels validation ranking top-1 fell
from 0.967 to 0.919), 300 steps of 16 examples at a peak learning rate of 2e-3 (longer runs
lost validation ranking: too few training families to go on learning from).
"""
import argparse
import functools
import json
import math
import os
import random
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import zoo_io  # noqa: E402
import zoo_models  # noqa: E402

TOKEN_SIZE = 32
EMBEDDING = 32
ENCODER_HIDDEN = 8
TRANSFORMER_LAYERS = 2
TRANSFORMER_HEADS = 4
TRANSFORMER_FEEDFORWARD = 64
# |child - parent| / RMS(child) spans 0 (frozen layers) and 1e-4 (float16 copies) to about 0.02
# (hard siblings), 0.1 (ordinary fine-tunes) and 1.4 (unrelated models): its logarithm makes the
# ratios that separate a parent from a sibling (about 1/sqrt(2)) equally visible at every scale.
DIFFERENCE_FLOOR = 1e-4
CHANNELS = ["parent", "child", "log(1e-4 + absolute difference)"]
PROBE_ROWS = 64
MAX_CANDIDATES = 12
# Variants of each model in training: 0 is its whole matrices, the others shuffled
# sub-matrices (size_subset).
SIZE_VARIANTS = 8
SIZE_SEED = 20240617
VALIDATION_SAMPLES = 10
# Families of the main zoo held out whole: one MLP and one CNN tree each.
VALIDATION_FAMILIES = ["mlp-F4", "cnn-F3"]
TEST_FAMILIES = ["mlp-F2", "cnn-F1"]


# ----------------------------------------------------------------------------- tokens
@functools.lru_cache(maxsize=None)
def axis_weights(length, size):
    """size x length matrix mapping `length` source cells onto `size` output cells.

    length >= size (area averaging): output cell r covers the source interval
    [r*length/size, (r+1)*length/size), fractional ends included; its value is the
    overlap-weighted mean of the source cells, weight = overlap / (length/size). Overlaps are
    computed in integers scaled by size, so the weights are exact rationals.
    length < size (nearest): output cell r copies source cell floor(r*length/size)."""
    weights = np.zeros((size, length), dtype=np.float64)
    for r in range(size):
        if length >= size:
            start, end = r * length, (r + 1) * length
            for i in range(start // size, -(-end // size)):
                overlap = min((i + 1) * size, end) - max(i * size, start)
                if overlap > 0:
                    weights[r, i] = overlap / length
        else:
            weights[r, (r * length) // size] = 1.0
    weights.flags.writeable = False  # shared by the cache
    return weights


def resample_to_grid(matrix, size):
    """rows x columns float64 matrix -> size x size float64 grid (rows, then columns)."""
    rows, columns = matrix.shape
    return axis_weights(rows, size) @ matrix @ axis_weights(columns, size).T


def root_mean_square(matrix):
    value = math.sqrt(float(np.mean(np.square(matrix))))
    return value if value > 0 else 1.0


def summarise(matrix):
    """What a token needs of one model's matrix alone: its grid and its RMS (the scale)."""
    matrix = matrix.astype(np.float64)
    return resample_to_grid(matrix, TOKEN_SIZE), root_mean_square(matrix)


def assemble_token(parent_grid, child_grid, difference_grid, child_scale):
    """The 3 x S x S float32 token: each grid divided by the child's RMS, the difference's then
    taken as log(DIFFERENCE_FLOOR + value); rounded to float32 once."""
    channels = np.stack([parent_grid / child_scale, child_grid / child_scale,
                         np.log(DIFFERENCE_FLOOR + difference_grid / child_scale)])
    return channels.astype(np.float32)


def pair_token(parent, child):
    """(parent, child, log(floor + |child - parent|)) resampled, divided by the child's RMS: 3 x S x S float32."""
    if parent.shape != child.shape:
        raise ValueError("parent %s and child %s differ in shape" % (parent.shape, child.shape))
    parent_grid, _ = summarise(parent)
    child_grid, child_scale = summarise(child)
    return assemble_token(parent_grid, child_grid, difference_grid(parent, child), child_scale)


def difference_grid(parent, child):
    return resample_to_grid(np.abs(child.astype(np.float64) - parent.astype(np.float64)), TOKEN_SIZE)


def size_subset(variant, index, axis, length):
    """Augmentation: the rows (axis 0) or columns (axis 1) of matrix `index` kept in variant
    `variant` > 0, a seeded random half to all of them in a random order. The same for every
    model of an architecture, so a parent and a child are cut and shuffled alike and their
    lineage is unchanged. Sub-matrices keep the detector from keying on the layer sizes of the
    training zoo; shuffled units keep it from recognising the training models themselves in
    the parent and child channels instead of reading how they differ."""
    rng = np.random.default_rng([SIZE_SEED, variant, index, axis, length])
    keep = int(rng.integers((length + 1) // 2, length + 1))
    return rng.choice(length, keep, replace=False)


# ----------------------------------------------------------------------------- zoo
class Zoo:
    """A zoo's models with the weight matrices and probe features the tokens are made from."""

    def __init__(self, directory):
        self.directory = directory
        with open(os.path.join(directory, "truth.json")) as f:
            self.truth = json.load(f)
        probe_path = os.path.join(directory, "probe.npy")
        if not os.path.isfile(probe_path):
            raise SystemExit("%s missing: run test/zoo/make_probe.py --out %s" % (probe_path, probe_path))
        probe = torch.from_numpy(np.load(probe_path)[:PROBE_ROWS].astype(np.float32))
        # Models stored as plain state dicts. Converted, quantized and adapter files (other
        # containers) are exact or near-exact copies that the engine recognises without the
        # detector, so they are left out as children and as candidates.
        self.models = {m["path"]: m for m in self.truth["models"] if m["format"] in zoo_io.FORMATS}
        self.matrices = {}
        self.features = {}
        for model in self.models.values():
            self.matrices[model["path"]], self.features[model["path"]] = self._load(model, probe)
        self.summaries = {}
        self.pairs = {}

    def _load(self, model, probe):
        architecture = self.truth["architectures"][model["architecture"]]
        state = zoo_io.load_state_dict_any(os.path.join(self.directory, self.truth["models_dir"], model["path"]))
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        matrices = [state[name].reshape(state[name].shape[0], -1).numpy().astype(np.float64)
                    for name in architecture["feature_tensors"] if state[name].dim() >= 2]
        network = zoo_models.build(model["architecture"], state["head.weight"].shape[0], architecture["config"])
        network.load_state_dict(state)
        network.eval()
        captured = []
        hook = network.head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        with torch.no_grad():
            network(probe)
        hook.remove()
        return matrices, captured[0].numpy().astype(np.float64)

    def variant_matrices(self, path, variant):
        """The model's weight matrices, then its features, as seen in size variant `variant`."""
        whole = self.matrices[path] + [self.features[path]]
        if variant == 0:
            return whole
        return [m[np.ix_(size_subset(variant, index, 0, m.shape[0]), size_subset(variant, index, 1, m.shape[1]))]
                for index, m in enumerate(whole)]

    def summary(self, path, variant):
        """Per matrix of the variant, the model's own grid and scale (shared by all its pairs)."""
        key = (path, variant)
        if key not in self.summaries:
            self.summaries[key] = [summarise(m) for m in self.variant_matrices(path, variant)]
        return self.summaries[key]

    def pair(self, candidate, child, variant=0):
        """(weight tokens T x C x S x S, feature token C x S x S) for one candidate of one child."""
        key = (candidate, child, variant)
        if key not in self.pairs:
            tokens = [assemble_token(parent_summary[0], child_summary[0], difference_grid(parent, matrix), child_summary[1])
                      for parent, matrix, parent_summary, child_summary
                      in zip(self.variant_matrices(candidate, variant), self.variant_matrices(child, variant),
                             self.summary(candidate, variant), self.summary(child, variant))]
            self.pairs[key] = (np.stack(tokens[:-1]), tokens[-1])
        return self.pairs[key]

    def has_one_parent(self, path):
        """A child the detector can answer for: one parent (merges have two), loaded here."""
        model = self.models[path]
        return model["parent"] in self.models and len(model.get("parents") or [model["parent"]]) == 1

    def can_be_parent(self, path):
        """Derived copies (fp16, pruned, merges, ...) are never parents in the zoo."""
        return self.models[path]["role"] != "derived"

    def descendants(self, path):
        everything = {m["path"]: m for m in self.truth["models"]}
        found, stack = set(), [path]
        while stack:
            for child in everything[stack.pop()]["children"]:
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found


# ----------------------------------------------------------------------------- network
class TokenEncoder(nn.Module):
    """1x1 conv + ReLU, 3x3 conv + BatchNorm + ReLU, global average pooling: C x S x S -> EMBEDDING."""

    def __init__(self):
        super().__init__()
        self.pointwise = nn.Conv2d(len(CHANNELS), ENCODER_HIDDEN, 1)
        # Stride 2 quarters the cost of the only sizeable layer; the pooling follows anyway.
        self.spatial = nn.Conv2d(ENCODER_HIDDEN, EMBEDDING, 3, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(EMBEDDING)

    def forward(self, images):
        hidden = F.relu(self.pointwise(images))
        return F.relu(self.norm(self.spatial(hidden))).mean(dim=(2, 3))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer written out so that it exports to plain ONNX operators."""

    def __init__(self):
        super().__init__()
        self.attention_norm = nn.LayerNorm(EMBEDDING)
        self.query_key_value = nn.Linear(EMBEDDING, 3 * EMBEDDING)
        self.attention_out = nn.Linear(EMBEDDING, EMBEDDING)
        self.feedforward_norm = nn.LayerNorm(EMBEDDING)
        self.feedforward = nn.Sequential(nn.Linear(EMBEDDING, TRANSFORMER_FEEDFORWARD), nn.ReLU(),
                                         nn.Linear(TRANSFORMER_FEEDFORWARD, EMBEDDING))

    def forward(self, tokens, key_bias):
        batch = tokens.shape[0]
        head_width = EMBEDDING // TRANSFORMER_HEADS
        qkv = self.query_key_value(self.attention_norm(tokens))
        qkv = qkv.reshape(batch, -1, 3, TRANSFORMER_HEADS, head_width).permute(2, 0, 3, 1, 4)
        attention = qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(head_width)
        if key_bias is not None:
            attention = attention + key_bias
        mixed = (attention.softmax(dim=-1) @ qkv[2]).transpose(1, 2).reshape(batch, -1, EMBEDDING)
        tokens = tokens + self.attention_out(mixed)
        return tokens + self.feedforward(self.feedforward_norm(tokens))


class LineageDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight_encoder = TokenEncoder()
        self.feature_encoder = TokenEncoder()
        self.cls = nn.Parameter(torch.randn(1, 1, EMBEDDING) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(TRANSFORMER_LAYERS))
        self.final_norm = nn.LayerNorm(EMBEDDING)
        self.score = nn.Linear(EMBEDDING, 1)
        self.no_parent = nn.Parameter(torch.zeros(()))

    def forward(self, weight_tokens, feature_tokens, weight_mask=None):
        """weight_tokens N x T x C x S x S, feature_tokens N x C x S x S, weight_mask N x T
        (True = real token; None = all real) -> one score per candidate (N)."""
        count = weight_tokens.shape[0]
        if weight_mask is None:
            weights = self.weight_encoder(weight_tokens.reshape((-1,) + weight_tokens.shape[2:]))
            weights = weights.reshape(count, -1, EMBEDDING)
            key_bias = None
        else:
            weights = weight_tokens.new_zeros(weight_mask.shape + (EMBEDDING,))
            weights[weight_mask] = self.weight_encoder(weight_tokens[weight_mask])
            always = weight_mask.new_ones((count, 1))
            keys = torch.cat([always, weight_mask, always], dim=1)
            key_bias = torch.zeros(keys.shape).masked_fill(~keys, -1e9)[:, None, None, :]
        features = self.feature_encoder(feature_tokens)[:, None, :]
        tokens = torch.cat([self.cls.expand(count, 1, EMBEDDING), weights, features], dim=1)
        for layer in self.layers:
            tokens = layer(tokens, key_bias)
        return self.score(self.final_norm(tokens[:, 0]))[:, 0]


class SingleCandidate(nn.Module):
    """The exported graph: one candidate's tokens (batch 1, any T) -> its score, shape [1]."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, weight_tokens, feature_token):
        return self.detector(weight_tokens, feature_token)


# ----------------------------------------------------------------------------- examples
def nearest_ancestor_label(zoo, child, candidates):
    """Index of the child's nearest ancestor among candidates, or len(candidates) for 'no parent'."""
    for ancestor in zoo.models[child]["ancestors"]:
        if ancestor in candidates:
            return candidates.index(ancestor)
    return len(candidates)


def sample_example(zoo, child, pool, rng, variants=1):
    """Random candidate subset for a training child: the parent in 80% of examples, the
    grandparent in 60% of the rest, then other models, same-family ones three times as likely;
    with the label (nearest_ancestor_label) and a random size variant below `variants`."""
    model = zoo.models[child]
    excluded = zoo.descendants(child) | {child}
    options = [p for p in pool[model["architecture"]] if p not in excluded]
    ancestors = [a for a in model["ancestors"] if a in zoo.models]
    count = rng.randint(2, min(MAX_CANDIDATES, len(options)))
    chosen = []
    if rng.random() < 0.8:
        chosen.append(ancestors[0])
    elif len(ancestors) > 1 and rng.random() < 0.6:
        chosen.append(ancestors[1])
    rest = [p for p in options if p not in chosen and p != ancestors[0]]
    weights = [3.0 if zoo.models[p]["family"] == model["family"] else 1.0 for p in rest]
    while len(chosen) < count and rest:
        pick = rng.choices(range(len(rest)), weights=weights)[0]
        chosen.append(rest.pop(pick))
        weights.pop(pick)
    rng.shuffle(chosen)
    return zoo, child, chosen, nearest_ancestor_label(zoo, child, chosen), rng.randrange(variants)


def batch_scores(detector, examples):
    """Logits (examples x (max candidates + 1), the last column 'no parent') and labels for
    examples (zoo, child, candidates, label, size variant)."""
    pairs = [zoo.pair(candidate, child, variant) for zoo, child, candidates, _, variant in examples for candidate in candidates]
    most_tokens = max(w.shape[0] for w, _ in pairs)
    weight_tokens = np.zeros((len(pairs), most_tokens) + pairs[0][0].shape[1:], dtype=np.float32)
    weight_mask = np.zeros((len(pairs), most_tokens), dtype=bool)
    for n, (w, _) in enumerate(pairs):
        weight_tokens[n, :w.shape[0]] = w
        weight_mask[n, :w.shape[0]] = True
    feature_tokens = np.stack([f for _, f in pairs])
    scores = detector(torch.from_numpy(weight_tokens), torch.from_numpy(feature_tokens), torch.from_numpy(weight_mask))
    most = max(len(candidates) for _, _, candidates, _, _ in examples)
    logits = torch.full((len(examples), most + 1), -1e9)
    labels = []
    start = 0
    for e, (_, _, candidates, label, _) in enumerate(examples):
        logits[e, :len(candidates)] = scores[start:start + len(candidates)]
        logits[e, most] = detector.no_parent
        start += len(candidates)
        labels.append(most if label == len(candidates) else label)
    return logits, torch.tensor(labels)


# ----------------------------------------------------------------------------- evaluation
def query_sets(zoo, families):
    """Closed-set queries and cross-generation queries whose child lies in `families` (None: all)."""
    def keep(child, candidates):
        return (child in zoo.models and zoo.has_one_parent(child) and all(c in zoo.models for c in candidates)
                and (families is None or zoo.models[child]["family"] in families))
    closed = [(q["query"], [c["path"] for c in q["candidates"]], q["true_parent"], 1) for q in zoo.truth["queries"]]
    cross = [(x["descendant"], list(x["candidates"]), x["true_ancestor"], x["generation_gap"]) for x in zoo.truth["cross_generation"]]
    return [q for q in closed if keep(q[0], q[1])], [q for q in cross if keep(q[0], q[1])]


def candidate_scores(detector, zoo, child, candidates):
    with torch.no_grad():
        logits, _ = batch_scores(detector, [(zoo, child, candidates, 0, 0)])
    return logits[0, :len(candidates)].numpy(), float(logits[0, -1])


def feature_l1_scores(zoo, child, candidates):
    """Learning-free baseline of the paper: -mean |F_i - F_c| on the same probe rows."""
    return np.array([-np.mean(np.abs(zoo.features[c] - zoo.features[child])) for c in candidates])


def accuracy(queries, scorer):
    """Top-1 accuracy, chance level (mean 1/K) and top-1 by generation gap."""
    hits, chance, by_gap = 0, 0.0, {}
    for child, candidates, truth, gap in queries:
        hit = candidates[int(np.argmax(scorer(child, candidates)))] == truth
        hits += hit
        chance += 1.0 / len(candidates)
        bucket = by_gap.setdefault(str(gap), [0, 0])
        bucket[0] += int(hit)
        bucket[1] += 1
    n = max(1, len(queries))
    return {"queries": len(queries), "top1": round(hits / n, 4), "chance": round(chance / n, 4),
            "top1_by_gap": {g: "%d/%d" % tuple(v) for g, v in sorted(by_gap.items())}}


def open_set(detector, zoo, closed):
    """How the 'no parent' slot behaves: with the true parent among the candidates (it should
    lose) and with every ancestor of the child removed (it should win)."""
    wrong_none, right_none, without = 0, 0, 0
    for child, candidates, _, _ in closed:
        scores, no_parent = candidate_scores(detector, zoo, child, candidates)
        wrong_none += no_parent > scores.max()
        unrelated = [c for c in candidates if c not in zoo.models[child]["ancestors"]]
        if unrelated:
            scores, no_parent = candidate_scores(detector, zoo, child, unrelated)
            right_none += no_parent > scores.max()
            without += 1
    return {"none_with_parent_present": "%d/%d" % (wrong_none, len(closed)),
            "none_with_ancestors_removed": "%d/%d" % (right_none, without)}


def evaluate(detector, zoo, families):
    detector.eval()
    closed, cross = query_sets(zoo, families)

    def learned(child, candidates):
        return candidate_scores(detector, zoo, child, candidates)[0]

    result = {
        "closed_set": accuracy(closed, learned),
        "cross_generation": accuracy(cross, learned),
        "open_set": open_set(detector, zoo, closed),
        "baseline_feature_l1": {"closed_set": accuracy(closed, lambda c, k: feature_l1_scores(zoo, c, k))["top1"],
                                "cross_generation": accuracy(cross, lambda c, k: feature_l1_scores(zoo, c, k))["top1"]},
    }
    detector.train()
    return result


def sampled_validation(detector, examples):
    """On fixed sampled examples: top-1 with the 'no parent' slot, cross-entropy, and top-1
    among the candidates alone where an ancestor is among them (the ranking without calibration)."""
    detector.eval()
    with torch.no_grad():
        logits, labels = batch_scores(detector, examples)
    detector.train()
    none = logits.shape[1] - 1
    with_ancestor = labels != none
    ranking = (logits[with_ancestor, :none].argmax(1) == labels[with_ancestor]).float().mean()
    return float((logits.argmax(1) == labels).float().mean()), float(F.cross_entropy(logits, labels)), float(ranking)


# ----------------------------------------------------------------------------- training
def candidate_pool(zoo, paths):
    """Per architecture, the models among `paths` that may be offered as candidates."""
    pool = {}
    for path in paths:
        if zoo.can_be_parent(path):
            pool.setdefault(zoo.models[path]["architecture"], []).append(path)
    return pool


def train(zoo, training_zoos, args, log):
    """Trains on the families of `zoo` not held out and on every family of `training_zoos`."""
    held_out = set(VALIDATION_FAMILIES) | set(TEST_FAMILIES)
    missing = held_out - {m["family"] for m in zoo.models.values()}
    if missing:
        raise SystemExit("the zoo has no families %s to hold out" % sorted(missing))
    children, pools = [], {}
    for source, families_out in [(zoo, held_out)] + [(z, set()) for z in training_zoos]:
        in_training = [path for path, m in source.models.items() if m["family"] not in families_out]
        pools[source.directory] = candidate_pool(source, in_training)
        children += [(source, path) for path in in_training if source.has_one_parent(path)]
    # The validation families' closed-set queries are too few to choose between checkpoints,
    # so selection uses VALIDATION_SAMPLES candidate subsets per validation child, drawn as in
    # training from every family except the test families.
    validation_pool = candidate_pool(zoo, [p for p in zoo.models if zoo.models[p]["family"] not in TEST_FAMILIES])
    validation_rng = random.Random(args.seed + 1)
    validation_examples = [sample_example(zoo, child, validation_pool, validation_rng)
                           for child in zoo.models if zoo.models[child]["family"] in VALIDATION_FAMILIES
                           and zoo.has_one_parent(child) for _ in range(VALIDATION_SAMPLES)]
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    detector = LineageDetector()
    optimizer = torch.optim.AdamW(detector.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.learning_rate, total_steps=args.steps, pct_start=0.1)
    best = None
    started = time.time()
    running = 0.0
    for step in range(1, args.steps + 1):
        examples = []
        for _ in range(args.batch):
            source, child = rng.choice(children)
            examples.append(sample_example(source, child, pools[source.directory], rng, SIZE_VARIANTS))
        logits, labels = batch_scores(detector, examples)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = 0.95 * running + 0.05 * float(loss) if step > 1 else float(loss)
        if step % args.evaluate_every == 0 or step == args.steps:
            top1, loss_on_validation, ranking = sampled_validation(detector, validation_examples)
            # The ranking answers the closed-set question, the product's main one; the 'no
            # parent' calibration and the loss break ties.
            key = (ranking, top1, -loss_on_validation)
            log("step %d  train loss %.3f  validation: top-1 %.3f loss %.3f ranking %.3f  (%.0fs)"
                % (step, running, top1, loss_on_validation, ranking, time.time() - started))
            if best is None or key > best[0]:
                best = (key, step, {k: v.clone() for k, v in detector.state_dict().items()})
    detector.load_state_dict(best[2])
    detector.eval()
    return detector, {"steps": args.steps, "selected_step": best[1], "training_children": len(children),
                      "validation_examples": len(validation_examples), "selection": "on the validation examples: ranking top-1 where an ancestor is offered, then top-1 with the no-parent slot, then loss",
                      "seconds": round(time.time() - started, 1)}


# ----------------------------------------------------------------------------- export
def export_onnx(detector, path):
    wrapper = SingleCandidate(detector).eval()
    weight_tokens = torch.zeros(1, 2, len(CHANNELS), TOKEN_SIZE, TOKEN_SIZE)
    feature_token = torch.zeros(1, len(CHANNELS), TOKEN_SIZE, TOKEN_SIZE)
    torch.onnx.export(wrapper, (weight_tokens, feature_token), path, opset_version=13,
                      input_names=["weight_tokens", "feature_token"], output_names=["score"],
                      dynamic_axes={"weight_tokens": {1: "weight_token_count"}}, do_constant_folding=True)


def write_fixtures(detector, directory, seed):
    """Synthetic inputs whose shapes exercise area averaging with fractional cell ends (36 x 40),
    nearest upsampling (5 x 7) and both at once (12 x 45, features 20 x 36); candidate 0 is the
    child's parent (the child is it plus a small update), candidate 1 an unrelated model.
    Writes inputs.bin (float32 LE: per model, its matrices in order), tokens.bin (candidate 0's
    weight tokens then its feature token, float32 LE) and case.json (shapes, layout, PyTorch scores)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_shapes = [(5, 7), (36, 40), (12, 45)]
    feature_shape = (20, 36)

    def model(base=None):
        if base is None:
            weights = [rng.normal(0, 0.3, s).astype(np.float32) for s in weight_shapes]
            features = np.maximum(rng.normal(0.2, 1.0, feature_shape), 0).astype(np.float32)
            return weights, features
        weights = [(w + rng.normal(0, 0.03, w.shape)).astype(np.float32) for w in base[0]]
        features = np.maximum(base[1] + rng.normal(0, 0.1, feature_shape), 0).astype(np.float32)
        return weights, features

    parent = model()
    child = model(parent)
    unrelated = model()
    models = [child, parent, unrelated]
    with open(os.path.join(directory, "inputs.bin"), "wb") as f:
        for weights, features in models:
            for matrix in weights + [features]:
                f.write(matrix.astype("<f4").tobytes())
    candidate_tokens = []
    for candidate in (parent, unrelated):
        weight_tokens = np.stack([pair_token(p, c) for p, c in zip(candidate[0], child[0])])
        candidate_tokens.append((weight_tokens, pair_token(candidate[1], child[1])))
    with open(os.path.join(directory, "tokens.bin"), "wb") as f:
        f.write(candidate_tokens[0][0].astype("<f4").tobytes())
        f.write(candidate_tokens[0][1].astype("<f4").tobytes())
    with torch.no_grad():
        scores = [float(detector(torch.from_numpy(w[None]), torch.from_numpy(f[None]))[0]) for w, f in candidate_tokens]
        logits = torch.tensor(scores + [float(detector.no_parent)])
        probabilities = logits.softmax(0).tolist()
    case = {
        "written_by": "test/zoo/train_detector.py (write_fixtures) with the shipped detector's PyTorch weights",
        "models": ["child", "candidate 0 (parent)", "candidate 1 (unrelated)"],
        "weight_shapes": [list(s) for s in weight_shapes],
        "feature_shape": list(feature_shape),
        "token_size": TOKEN_SIZE,
        "channels": len(CHANNELS),
        "tokens": "candidate 0: its %d weight tokens, then its feature token" % len(weight_shapes),
        "scores": scores,
        "no_parent_logit": float(detector.no_parent),
        "probabilities": probabilities[:-1],
        "no_parent_probability": probabilities[-1],
    }
    with open(os.path.join(directory, "case.json"), "w") as f:
        json.dump(case, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------- main
def zoo_record(zoo):
    t = zoo.truth
    return {"directory": os.path.relpath(zoo.directory), "preset": t["preset"], "seed": t["seed"],
            "source_hash": t["source_hash"], "models": len(t["models"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", required=True, help="zoo to train on; VALIDATION_FAMILIES and TEST_FAMILIES are held out")
    parser.add_argument("--train-zoo", action="append", default=[],
                        help="a further zoo to train on, every family of it (repeatable; other seeds of the small preset)")
    parser.add_argument("--extra-test-zoo", help="another zoo, every family of it held out (reported as a second test set)")
    parser.add_argument("--out", required=True, help="directory for lineageDetector.onnx and lineageDetector.json")
    parser.add_argument("--fixtures", required=True, help="directory for the TypeScript tests' fixtures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--evaluate-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    np.random.seed(args.seed)
    random.seed(args.seed)
    started = time.time()

    def log(message):
        print(message, flush=True)

    zoo = Zoo(args.zoo)
    training_zoos = [Zoo(directory) for directory in args.train_zoo]
    extra = Zoo(args.extra_test_zoo) if args.extra_test_zoo else None
    log("loaded zoos in %.0fs" % (time.time() - started))
    detector, training = train(zoo, training_zoos, args, log)
    results = {"validation": evaluate(detector, zoo, VALIDATION_FAMILIES), "test": evaluate(detector, zoo, TEST_FAMILIES)}
    if extra is not None:
        results["test_extra_zoo"] = evaluate(detector, extra, None)
    log(json.dumps(results, indent=2))

    os.makedirs(args.out, exist_ok=True)
    export_onnx(detector, os.path.join(args.out, "lineageDetector.onnx"))
    write_fixtures(detector, args.fixtures, args.seed)
    record = {
        "format": "neural-lineage-detector",
        "version": 1,
        "description": "Learned lineage detector (Neural Lineage, Yu & Wang, CVPR 2024, approach 2); see test/zoo/train_detector.py",
        "tokenSize": TOKEN_SIZE,
        "channels": CHANNELS,
        "tokenScale": "each channel divided by the root mean square of the child's matrix (1 when that is 0)",
        "probeRows": PROBE_ROWS,
        "features": "input of the task head (after its activation) on the first probeRows probe images",
        "weights": "every 2-D weight matrix of the feature extractor, conv kernels reshaped to out x rest; any order",
        "inputs": {"weightTokens": "weight_tokens", "featureToken": "feature_token"},
        "output": "score",
        "noParentLogit": float(detector.no_parent),
        "network": {"embedding": EMBEDDING, "encoderHidden": ENCODER_HIDDEN, "layers": TRANSFORMER_LAYERS,
                    "heads": TRANSFORMER_HEADS, "feedforward": TRANSFORMER_FEEDFORWARD,
                    "parameters": sum(p.numel() for p in detector.parameters())},
        "training": dict(training, **{
            "command": " ".join(shlex.quote(a) for a in ["/usr/bin/python3", os.path.relpath(__file__)] + sys.argv[1:]),
            "seed": args.seed, "batch": args.batch, "learningRate": args.learning_rate,
            "maxCandidates": MAX_CANDIDATES, "torch": torch.__version__, "threads": args.threads,
            "zoo": zoo_record(zoo), "trainingZoos": [zoo_record(z) for z in training_zoos],
            "extraTestZoo": zoo_record(extra) if extra is not None else None,
            "split": {"validationFamilies": VALIDATION_FAMILIES, "testFamilies": TEST_FAMILIES,
                      "trainingFamilies": sorted({m["family"] for m in zoo.models.values()
                                                  if m["family"] not in VALIDATION_FAMILIES + TEST_FAMILIES and m["parent"]}),
                      "note": "split by child: validation and test children are those of whole held-out families, whose models never appear in training; negatives (families without children) may appear as distractors everywhere"},
        }),
        "results": results,
        "totalSeconds": round(time.time() - started, 1),
    }
    with open(os.path.join(args.out, "lineageDetector.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    log("wrote %s (%d bytes) in %.0fs" % (os.path.join(args.out, "lineageDetector.onnx"),
                                          os.path.getsize(os.path.join(args.out, "lineageDetector.onnx")), time.time() - started))


if __name__ == "__main__":
    main()
