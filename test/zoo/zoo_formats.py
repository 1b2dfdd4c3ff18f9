"""Writers (and the self-check's readers) for the zoo's typed-relation copies: the same
weights converted to ONNX, Keras HDF5 and NumPy .npz, int8/int4 GGUF quantizations, unmerged
PEFT LoRA adapters and Hugging Face Trainer checkpoint folders.

Everything here follows the published layouts and is written without the producing
libraries (none of keras, onnx, gguf or peft is installed): torch.onnx.export writes the
ONNX file, h5py the HDF5 file, and the rest is plain bytes. Every writer is deterministic.
"""
import io
import json
import struct
import zipfile

import numpy as np
import torch

import zoo_io

# name -> (file names to pick from, key prefix seen in the file, container)
FORMATS = {
    "onnx": (["model.onnx"], "", "onnx-protobuf"),
    "keras-h5": (["weights.h5", "model_weights.h5", "tf_model.h5"], "", "hdf5"),
    "npz": (["weights.npz", "params.npz", "model.npz"], "", "numpy-zip"),
    "gguf": (["model.gguf", "weights.gguf"], "", "gguf"),
    "peft-adapter": (["adapter_model.safetensors"], "base_model.model.", "safetensors"),
}
# Files that sit beside a checkpoint and belong to it
SIDECAR_NAMES = ("adapter_config.json", "trainer_state.json")

ONNX_OPSET = 13
KERAS_VERSION = "2.11.0"
# The fixed zip timestamp of .npz members (np.savez stamps the current time)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _float_state(state):
    """The tensors a converter carries over: BN's num_batches_tracked counts steps, not
    weights, and none of the target formats has a place for it."""
    return {k: v for k, v in state.items() if v.is_floating_point()}


def dropped_in_conversion(state):
    return sorted(k for k, v in state.items() if not v.is_floating_point())


# ============================================================================ ONNX
def write_onnx(path, model):
    """torch.onnx.export at opset 13. PRESERVE keeps the eval-mode model as it is: exporting
    in EVAL mode would fold each BatchNorm into the conv before it and rename the result,
    while here every initializer keeps its state-dict name and value."""
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 784), path, opset_version=ONNX_OPSET,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _varint(buf, pos):
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint at %d" % pos)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _proto_fields(buf):
    """(field number, wire type, value) of one protobuf message; value is an int for
    varints and fixed-width fields, bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("field %d runs past the end of its message" % field)
            value, pos = bytes(buf[pos:pos + n]), pos + n
        else:
            raise ValueError("unsupported wire type %d" % wire)
        yield field, wire, value


_ONNX_DTYPES = {1: np.float32, 7: np.int64, 10: np.float16, 11: np.float64}


def read_onnx(path):
    """The opset and the graph initializers of an ONNX model ({name: numpy array}), parsed
    from the protobuf wire format (onnx.proto: ModelProto.opset_import = 8, .graph = 7;
    GraphProto.initializer = 5; TensorProto.dims = 1, data_type = 2, name = 8, raw_data = 9,
    float_data = 4)."""
    with open(path, "rb") as f:
        raw = f.read()
    opsets, graph = {}, None
    for field, _, value in _proto_fields(raw):
        if field == 8:
            domain, version = "", None
            for f2, _, v2 in _proto_fields(value):
                if f2 == 1:
                    domain = v2.decode("utf-8")
                elif f2 == 2:
                    version = v2
            opsets[domain] = version
        elif field == 7:
            graph = value
    if graph is None:
        raise ValueError("%s: no graph" % path)
    tensors = {}
    for field, _, value in _proto_fields(graph):
        if field != 5:
            continue
        dims, dtype, name, data, floats = [], None, None, None, []
        for f2, wire, v2 in _proto_fields(value):
            if f2 == 1 and wire == 0:
                dims.append(v2)
            elif f2 == 1 and wire == 2:  # packed dims
                p = 0
                while p < len(v2):
                    d, p = _varint(v2, p)
                    dims.append(d)
            elif f2 == 2:
                dtype = v2
            elif f2 == 8:
                name = v2.decode("utf-8")
            elif f2 == 9:
                data = v2
            elif f2 == 4 and wire == 2:
                floats.extend(np.frombuffer(v2, "<f4"))
            elif f2 == 4 and wire == 5:
                floats.append(struct.unpack("<f", struct.pack("<I", v2))[0])
        if dtype not in _ONNX_DTYPES:
            raise ValueError("%s: initializer %s has ONNX data type %s" % (path, name, dtype))
        if data is not None:
            arr = np.frombuffer(data, np.dtype(_ONNX_DTYPES[dtype]).newbyteorder("<"))
        else:
            arr = np.asarray(floats, _ONNX_DTYPES[dtype])
        tensors[name] = arr.reshape(dims).copy()
    return opsets, tensors


# ============================================================================ Keras HDF5
def keras_weight_path(layer, weight):
    """Where Keras 2 save_weights puts a weight: group <layer>, dataset <layer>/<weight>:0
    inside it (the variable name contains a slash, so h5py nests it one group deeper)."""
    return "%s/%s/%s:0" % (layer, layer, weight)


def keras_layout(arch_spec):
    """{state key: (path in the file, layout)} for an architecture's Keras layer table."""
    out = {}
    for layer, weights in arch_spec["keras_layers"]:
        for weight, key, layout in weights:
            out[key] = (keras_weight_path(layer, weight), layout)
    return out


def _to_keras(value, layout):
    v = value.detach().cpu().numpy().astype(np.float32)
    if layout == "dense":   # torch Linear [out, in] -> Keras Dense kernel [in, out]
        return np.ascontiguousarray(v.T)
    if layout == "conv":    # torch Conv2d [O, I, H, W] -> Keras Conv2D kernel [H, W, I, O]
        return np.ascontiguousarray(v.transpose(2, 3, 1, 0))
    return v


def from_keras(array, layout):
    """The inverse of the layout change, back to torch's shape."""
    if layout == "dense":
        return np.ascontiguousarray(array.T)
    if layout == "conv":
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    return array


def write_keras_h5(path, state, arch_spec):
    """The layout of Keras 2 `model.save_weights("x.h5")`: root attributes layer_names (every
    layer in model order, weightless ones included), backend and keras_version; one group per
    layer, created in sorted name order, with a weight_names attribute and one float32
    dataset per weight."""
    import h5py
    layers = arch_spec["keras_layers"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode("utf-8") for name, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION.encode("utf-8")
        for name, weights in sorted(layers, key=lambda layer: layer[0]):
            g = f.create_group(name)
            names = ["%s/%s:0" % (name, w) for w, _, _ in weights]
            # a list of bytes becomes a fixed-length string array, an empty list an empty
            # float array, as in Keras's save_attributes_to_hdf5_group
            g.attrs["weight_names"] = [n.encode("utf-8") for n in names]
            for wname, (_, key, layout) in zip(names, weights):
                value = _to_keras(state[key], layout)
                ds = g.create_dataset(wname, value.shape, dtype=value.dtype)
                ds[()] = value


def as_text(value):
    """h5py 3 reads back the strings Keras writes as bytes as str; older files hold bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_keras_h5(path):
    """(root attributes as text, {layer: [weight names]}, {dataset path: array})."""
    import h5py
    with h5py.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        layers, arrays = {}, {}
        for raw in attrs.get("layer_names", []):
            name = as_text(raw)
            g = f[name]
            names = [as_text(n) for n in g.attrs["weight_names"]]
            layers[name] = names
            for n in names:
                arrays["%s/%s" % (name, n)] = g[n][()]
    return attrs, layers, arrays


# ============================================================================ NumPy .npz
def write_npz(path, state):
    """np.savez's layout (a stored zip of <key>.npy members) with fixed member timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, value in state.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, value.detach().cpu().numpy(), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o600 << 16
            zf.writestr(info, buf.getvalue())


def read_npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ============================================================================ GGUF
GGUF_VERSION = 3
GGUF_ALIGNMENT = 32
QK = 32  # values per Q8_0 / Q4_0 block
GGML_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 8}
_GGML_NAMES = {v: k for k, v in GGML_TYPES.items()}
# llama.cpp's general.file_type for a file "mostly" of one quantization
_FILE_TYPES = {"Q4_0": 2, "Q8_0": 7}
# gguf metadata value types
_GGUF_UINT32, _GGUF_STRING, _GGUF_ARRAY = 4, 8, 9
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}


def _round_half_away(x):
    """C roundf, which ggml's reference quantizers use (numpy rounds half to even)."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def quantize_q8_0(values):
    """ggml's reference Q8_0: per block of 32, d = max|x| / 127, q = round(x / d) as int8;
    a block is d as float16 followed by the 32 int8 values (34 bytes)."""
    x = np.asarray(values, np.float32).reshape(-1, QK)
    d = np.abs(x).max(axis=1) / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = _round_half_away(x * inv[:, None]).astype(np.int8)
    blocks = np.zeros(len(x), dtype=[("d", "<f2"), ("qs", "i1", QK)])
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = q
    return blocks.tobytes()


def quantize_q4_0(values):
    """ggml's reference Q4_0: per block of 32, the value of largest magnitude m gives
    d = m / -8, and q = min(15, floor(x / d + 8.5)) in 4 bits; a block is d as float16
    followed by 16 bytes whose low nibbles hold values 0..15 and high nibbles 16..31."""
    x = np.asarray(values, np.float32).reshape(-1, QK)
    m = x[np.arange(len(x)), np.abs(x).argmax(axis=1)]
    d = m / np.float32(-8)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.minimum(15, np.floor(x * inv[:, None] + np.float32(8.5))).astype(np.uint8)
    blocks = np.zeros(len(x), dtype=[("d", "<f2"), ("qs", "u1", QK // 2)])
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = q[:, :QK // 2] | (q[:, QK // 2:] << 4)
    return blocks.tobytes()


def dequantize(ggml_type, raw, count):
    """(values as float32, quantization step of each value: |d| for Q8_0 and Q4_0, 0 for F32)."""
    if ggml_type == "F32":
        return np.frombuffer(raw, "<f4", count).astype(np.float32), np.zeros(count, np.float32)
    if ggml_type == "Q8_0":
        b = np.frombuffer(raw, [("d", "<f2"), ("qs", "i1", QK)], count // QK)
        d = b["d"].astype(np.float32)
        values = b["qs"].astype(np.float32) * d[:, None]
    elif ggml_type == "Q4_0":
        b = np.frombuffer(raw, [("d", "<f2"), ("qs", "u1", QK // 2)], count // QK)
        d = b["d"].astype(np.float32)
        q = np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=1).astype(np.float32) - 8
        values = q * d[:, None]
    else:
        raise ValueError("ggml type %s" % ggml_type)
    return values.reshape(-1), np.repeat(np.abs(d), QK)


def gguf_tensor_type(shape, quant):
    """Matrices whose rows (the innermost dimension) split into whole blocks are quantized;
    everything else (biases, BN, conv kernels, odd row lengths) stays F32."""
    return quant if len(shape) == 2 and shape[-1] % QK == 0 else "F32"


def _gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def write_gguf(path, state, quant, architecture, name):
    """GGUF v3 (ggml docs/gguf.md): header, metadata key/values, tensor infos (dimensions
    innermost first, so a torch [out, in] matrix is listed as [in, out]), padding to the
    alignment, then each tensor's data at an aligned offset. Returns {state key: ggml type}."""
    tensors = _float_state(state)
    meta = [("general.architecture", _GGUF_STRING, architecture),
            ("general.name", _GGUF_STRING, name),
            ("general.alignment", _GGUF_UINT32, GGUF_ALIGNMENT),
            ("general.file_type", _GGUF_UINT32, _FILE_TYPES[quant]),
            ("general.quantization_version", _GGUF_UINT32, 2)]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(meta)))
    for key, vtype, value in meta:
        out += _gguf_string(key) + struct.pack("<I", vtype)
        out += _gguf_string(value) if vtype == _GGUF_STRING else struct.pack("<I", value)
    types, blobs, offset = {}, [], 0
    for key, v in tensors.items():
        shape = list(v.shape)
        gtype = gguf_tensor_type(shape, quant)
        flat = v.detach().cpu().numpy().astype(np.float32).reshape(-1)
        if gtype == "Q8_0":
            data = quantize_q8_0(flat)
        elif gtype == "Q4_0":
            data = quantize_q4_0(flat)
        else:
            data = flat.astype("<f4").tobytes()
        out += _gguf_string(key) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        out += struct.pack("<IQ", GGML_TYPES[gtype], offset)
        types[key] = gtype
        pad = (-len(data)) % GGUF_ALIGNMENT
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    out += b"\0" * ((-len(out)) % GGUF_ALIGNMENT)
    with open(path, "wb") as f:
        f.write(bytes(out))
        for b in blobs:
            f.write(b)
    return types


def read_gguf(path):
    """(metadata {key: value}, {name: {"type", "shape" (torch order), "values", "step"}})."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:4] != b"GGUF":
        raise ValueError("%s: not GGUF" % path)
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", raw, 4)
    if version != GGUF_VERSION:
        raise ValueError("%s: GGUF version %d" % (path, version))
    pos = 24

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", raw, pos)
        s = raw[pos + 8:pos + 8 + n].decode("utf-8")
        pos += 8 + n
        return s

    def value(vtype):
        nonlocal pos
        if vtype == _GGUF_STRING:
            return string()
        if vtype == _GGUF_ARRAY:
            etype, n = struct.unpack_from("<IQ", raw, pos)
            pos += 12
            return [value(etype) for _ in range(n)]
        fmt = _GGUF_SCALARS[vtype]
        (v,) = struct.unpack_from(fmt, raw, pos)
        pos += struct.calcsize(fmt)
        return v

    meta = {}
    for _ in range(n_kv):
        key = string()
        (vtype,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        meta[key] = value(vtype)
    infos = []
    for _ in range(n_tensors):
        name = string()
        (nd,) = struct.unpack_from("<I", raw, pos)
        dims = list(struct.unpack_from("<%dQ" % nd, raw, pos + 4))
        gtype, offset = struct.unpack_from("<IQ", raw, pos + 4 + 8 * nd)
        pos += 4 + 8 * nd + 12
        infos.append((name, dims, _GGML_NAMES[gtype], offset))
    alignment = meta.get("general.alignment", GGUF_ALIGNMENT)
    base = pos + (-pos) % alignment
    tensors = {}
    for name, dims, gtype, offset in infos:
        count = int(np.prod(dims))
        size = {"F32": 4 * count, "Q8_0": count // QK * 34, "Q4_0": count // QK * 18}[gtype]
        if offset % alignment or base + offset + size > len(raw):
            raise ValueError("%s: tensor %s misplaced" % (path, name))
        values, step = dequantize(gtype, raw[base + offset:base + offset + size], count)
        shape = list(reversed(dims))
        tensors[name] = {"type": gtype, "shape": shape, "values": values.reshape(shape),
                         "step": step.reshape(shape)}
    return meta, tensors


# ============================================================================ PEFT adapter
def peft_key(target, factor):
    """PEFT's saved name for a LoRA factor (the adapter name "default" is dropped on save)."""
    return "base_model.model.%s.lora_%s.weight" % (target, factor)


def write_peft_adapter(path, factors):
    tensors = {}
    for target, (a, b) in factors.items():
        tensors[peft_key(target, "A")] = a
        tensors[peft_key(target, "B")] = b
    zoo_io.write_safetensors(path, tensors, metadata={"format": "pt"})


def peft_adapter_config(rank, alpha, targets, base_model_name_or_path):
    """adapter_config.json as peft's LoraConfig saves it. base_model_name_or_path is left out
    when None: an adapter passed around without a record of its base."""
    config = {
        "alpha_pattern": {},
        "auto_mapping": None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": rank,
        "rank_pattern": {},
        "revision": None,
        "target_modules": sorted(targets),
        "task_type": None,
    }
    if base_model_name_or_path is not None:
        config["base_model_name_or_path"] = base_model_name_or_path
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


# ============================================================================ Trainer run
def trainer_state(global_step, max_steps, save_steps, steps_per_epoch, epochs, batch_size,
                  logging_steps, log_history):
    """trainer_state.json as the Hugging Face Trainer writes it into checkpoint-<step>/:
    the step reached and every log entry so far."""
    state = {
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": round(global_step / steps_per_epoch, 4),
        "eval_steps": 500,
        "global_step": global_step,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": log_history,
        "logging_steps": logging_steps,
        "max_steps": max_steps,
        "num_input_tokens_seen": 0,
        "num_train_epochs": epochs,
        "save_steps": save_steps,
        "total_flos": 0.0,
        "train_batch_size": batch_size,
        "trial_name": None,
        "trial_params": None,
    }
    return json.dumps(state, indent=2, sort_keys=True) + "\n"
