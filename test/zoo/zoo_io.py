"""Checkpoint writers for the model zoo: safetensors (own tiny writer), torch.save zip and
legacy formats, DataParallel `module.` prefixes and Lightning-style `.ckpt` dicts.

Each format is (name, default file names, writer). A writer gets the plain state dict
plus context (optimizer, epoch, steps, hyper-parameters) and writes one file.
"""
import json
import struct

import numpy as np
import torch

_ST_DTYPES = {
    torch.float32: ("F32", np.float32),
    torch.float16: ("F16", np.float16),
    torch.float64: ("F64", np.float64),
    torch.int64: ("I64", np.int64),
    torch.int32: ("I32", np.int32),
    torch.int8: ("I8", np.int8),
    torch.uint8: ("U8", np.uint8),
    torch.bool: ("BOOL", np.bool_),
}


def write_safetensors(path, tensors, metadata=None):
    """Minimal safetensors writer: u64-LE header length, JSON header
    {name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__": {str: str}},
    header padded with spaces to a multiple of 8, then raw little-endian data."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        code, npdt = _ST_DTYPES[t.dtype]
        arr = t.numpy().astype(np.dtype(npdt).newbyteorder("<"), copy=False)
        b = arr.tobytes(order="C")
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Reader used by the self-check (independent of the `safetensors` package)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    base = 8 + n
    rev = {v[0]: v[1] for v in _ST_DTYPES.values()}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(raw[base + b:base + e], dtype=np.dtype(rev[info["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.copy().reshape(info["shape"]))
    return out, meta


def _plain(sd):
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def _w_safetensors(path, sd, ctx):
    write_safetensors(path, sd, metadata={"format": "pt"})


def _w_pt_zip(path, sd, ctx):
    torch.save(_plain(sd), path)


_LEGACY_SAVE = None


def _deterministic_legacy_save():
    """torch's legacy (pre-1.6, non-zip) writer names storages by memory address
    (str(storage._cdata)), so files differ byte-wise between runs. Build a copy of
    torch.serialization._legacy_save whose storage keys are "0", "1", ... in first-seen
    order instead; the result is still an ordinary legacy file that torch.load reads.
    Falls back to torch.save(..., _use_new_zipfile_serialization=False) if the torch
    version's source does not look as expected."""
    global _LEGACY_SAVE
    if _LEGACY_SAVE is None:
        import inspect
        import textwrap
        import torch.serialization as ser
        fn = False
        try:
            src = textwrap.dedent(inspect.getsource(ser._legacy_save))
            needle = "storage_key = str(storage._cdata)"
            if src.count(needle) == 1:
                src = src.replace(needle, "storage_key = _zoo_keys.setdefault(storage._cdata, str(len(_zoo_keys)))")
                src = src.replace("def _legacy_save(obj, f, pickle_module, pickle_protocol)",
                                  "def _legacy_save(obj, f, pickle_module, pickle_protocol, _zoo_keys)")
                ns = dict(vars(ser))
                exec(compile(src, "<zoo legacy save>", "exec"), ns)
                fn = ns["_legacy_save"]
        except Exception:
            fn = False
        _LEGACY_SAVE = fn
    return _LEGACY_SAVE


def save_legacy(obj, path):
    import pickle
    fn = _deterministic_legacy_save()
    if not fn:
        torch.save(obj, path, _use_new_zipfile_serialization=False)
        return
    with open(path, "wb") as f:
        fn(obj, f, pickle, 2, {})


def _w_pt_legacy(path, sd, ctx):
    save_legacy(_plain(sd), path)


def _w_pt_module(path, sd, ctx):
    torch.save({"module." + k: v for k, v in _plain(sd).items()}, path)


def _w_pt_legacy_module(path, sd, ctx):
    save_legacy({"module." + k: v for k, v in _plain(sd).items()}, path)


def _w_lightning(path, sd, ctx):
    opt = ctx.get("optimizer")
    ckpt = {
        "epoch": int(ctx.get("epoch", 0)),
        "global_step": int(ctx.get("steps", 0)),
        "pytorch-lightning_version": "1.9.5",
        "state_dict": {"model." + k: v for k, v in _plain(sd).items()},
        "loops": {},
        "callbacks": {},
        "optimizer_states": [opt.state_dict()] if opt is not None else [],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": dict(ctx.get("hparams", {})),
    }
    torch.save(ckpt, path)


# name -> (file names to pick from, writer, key prefix seen in the file, container)
FORMATS = {
    "safetensors": (["model.safetensors", "weights.safetensors", "params.safetensors"],
                    _w_safetensors, "", "safetensors"),
    "pt-zip": (["model.pt", "weights.pt", "checkpoint.pt", "final.pt"], _w_pt_zip, "", "torch-zip"),
    "bin-zip": (["pytorch_model.bin"], _w_pt_zip, "", "torch-zip"),
    "pth-legacy": (["model.pth", "checkpoint.pth", "weights.pth"], _w_pt_legacy, "", "torch-legacy"),
    "pth-module": (["model_best.pth", "checkpoint.pth"], _w_pt_module, "module.", "torch-zip"),
    "pt-legacy-module": (["model.pt", "net.pt"], _w_pt_legacy_module, "module.", "torch-legacy"),
    "ckpt-lightning": (["last.ckpt", "model.ckpt", "best.ckpt"], _w_lightning, "model.", "torch-zip"),
}


def load_state_dict_any(path):
    """Load any file written here back to a plain (unprefixed) state dict."""
    if path.endswith(".safetensors"):
        sd, _ = read_safetensors(path)
        return sd
    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    out = {}
    for k, v in obj.items():
        for p in ("module.", "model."):
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out
