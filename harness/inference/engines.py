"""Where the embedding function is chosen: (engine, device, weights) -> a module to embed with.

``eval``, ``verify`` and ``bench --mode eval`` all ask :func:`embedder`, and feed what it
returns through the one preprocessing and embedding path (:mod:`arcbench.data.preprocess`,
:mod:`arcbench.verification.evaluate`).  Two engines:

* ``torch``: the registered backbone with the weights loaded (:mod:`arcbench.inference.weights`);
* ``onnxruntime``: an ONNX file run by ONNX Runtime, wrapped as a module that takes and
  returns torch tensors.  A ``.pth`` given with ``--engine onnxruntime`` is exported first
  (:mod:`arcbench.inference.onnx_export`) into a temporary file.

The engine follows the file (``.onnx`` -> onnxruntime) unless named.  ONNX Runtime's
execution providers come from the device plugin's optional ``onnx_providers()``; a
provider this ONNX Runtime lacks is an error, never a silent run on the CPU.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from ..errors import ArcbenchError

ENGINES = ("torch", "onnxruntime")


def is_onnx_file(weights) -> bool:
    return bool(weights) and os.fspath(weights).lower().endswith(".onnx")


def engine_for(weights, engine: Optional[str] = None) -> str:
    """The engine that runs ``weights``: the one named, else the file's (``.onnx``: onnxruntime)."""
    if engine is None:
        return "onnxruntime" if is_onnx_file(weights) else "torch"
    if engine not in ENGINES:
        raise ArcbenchError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if engine == "torch" and is_onnx_file(weights):
        raise ArcbenchError("an ONNX file runs under --engine onnxruntime, not torch", weights)
    return engine


def providers_for(device) -> list:
    """ONNX Runtime execution providers for ``device`` (its plugin's ``onnx_providers()``), checked
    against the providers this onnxruntime build has."""
    from .onnx_export import require

    ort = require("onnxruntime", "the onnxruntime engine")
    wanted = getattr(device, "onnx_providers", None)
    wanted = wanted() if callable(wanted) else None
    if not wanted:
        raise ArcbenchError(f"device {device.name} names no ONNX Runtime execution provider (its plugin has no "
                            "onnx_providers()); use --engine torch or another --device")
    have = ort.get_available_providers()
    first = wanted[0][0] if isinstance(wanted[0], tuple) else wanted[0]
    if first not in have:
        raise ArcbenchError(f"device {device.name} needs ONNX Runtime's {first}, which this onnxruntime "
                            f"{ort.__version__} does not have (it has {', '.join(have)}); install the build "
                            f"that provides it (e.g. onnxruntime-gpu for CUDA) or use --engine torch")
    return list(wanted)


_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxRuntimeModule(torch.nn.Module):
    """An ONNX Runtime session called like a backbone: NCHW float tensor in, (N, D) float32 out (on the host).

    It has no parameters, so moving it, eval() and memory formats are no-ops; the input is cast to
    the graph's input type (fp16 graphs take fp16)."""

    def __init__(self, session, path: str):
        super().__init__()
        self.session, self.path = session, path
        inp = session.get_inputs()[0]
        self.input_name, self.output_name = inp.name, session.get_outputs()[0].name
        if inp.type not in _NUMPY:
            raise ArcbenchError(f"ONNX graph input {inp.name!r} is {inp.type}, not a float tensor", path)
        self.input_dtype = _NUMPY[inp.type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu").numpy(), dtype=self.input_dtype)
        out = self.session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).flatten(1)


def open_onnx(path, device, threads: Optional[int] = None):
    """``(OnnxRuntimeModule, metadata dict, input_size or None)`` for an ONNX file; one-line errors."""
    from .onnx_export import require

    path = os.fspath(path)
    ort = require("onnxruntime", "the onnxruntime engine")
    if not os.path.exists(path):
        raise ArcbenchError("ONNX file not found", path)
    providers = providers_for(device)
    opts = ort.SessionOptions()
    # as many threads as torch uses, so the engines are compared on the same cores
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/NotImplemented types
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = (lines[0] if lines else type(exc).__name__)[:240]
        raise ArcbenchError(f"cannot load ONNX model (truncated, corrupt or not an ONNX file): {detail}",
                            path) from None
    first = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if first not in session.get_providers():
        raise ArcbenchError(f"ONNX Runtime did not enable {first} for device {device.name} (it runs "
                            f"{', '.join(session.get_providers())}); refusing to run on another device", path)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ArcbenchError(f"expected one image input and an embedding output, the graph has {len(inputs)} "
                            f"input(s) and {len(outputs)} output(s)", path)
    shape = inputs[0].shape
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise ArcbenchError(f"expected an NCHW image input (N, 3, H, W), the graph's input is {shape}", path)
    side = shape[2] if isinstance(shape[2], int) and shape[2] == shape[3] else None
    meta = dict(session.get_modelmeta().custom_metadata_map or {})
    return OnnxRuntimeModule(session, path), meta, side


@dataclass
class Embedder:
    """What to embed with: ``model`` (a backbone or an ONNX Runtime session module) and how to feed it."""

    model: torch.nn.Module
    engine: str
    backbone: str
    input_size: int
    fold_bn: bool
    weights: Optional[str] = None
    metadata: dict = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @property
    def channels_last(self) -> bool:
        return self.engine == "torch"


def embedder(backbone: Optional[str], weights, device, engine: Optional[str] = None,
             onnx_threads: Optional[int] = None) -> Embedder:
    """The one place an embedding function is chosen from (engine, device, weights).

    ``backbone`` None: the ONNX file's ``backbone`` metadata, else mobilefacenet.  ``weights``
    None: the backbone's random initialisation (bench).  The torch model is placed on the
    bound card; the ONNX session on the device's execution provider."""
    from ..registry import get_backbone

    engine = engine_for(weights, engine)
    if engine == "torch":
        from .weights import load_backbone

        name = backbone or "mobilefacenet"
        spec = get_backbone(name)
        model = load_backbone(name, weights).to(device.torch_device()).eval()
        return Embedder(model, "torch", name, spec.input_size, spec.fold_bn, weights and os.fspath(weights))
    if not is_onnx_file(weights):
        return _exported(backbone or "mobilefacenet", weights, device, onnx_threads)
    module, meta, side = open_onnx(weights, device, onnx_threads)
    made_for = meta.get("backbone")
    if backbone and made_for and made_for != backbone:
        raise ArcbenchError(f"this ONNX file was exported for backbone {made_for}, not {backbone} "
                            f"(pass --backbone {made_for})", weights)
    name = backbone or made_for or "mobilefacenet"
    spec = get_backbone(name)
    if side is not None and side != spec.input_size:
        raise ArcbenchError(f"the graph takes {side}x{side} images but backbone {name} is registered with "
                            f"input size {spec.input_size}", weights)
    if side is None and meta.get("input_size") and meta["input_size"] != str(spec.input_size):
        raise ArcbenchError(f"the file says input size {meta['input_size']} but backbone {name} is registered "
                            f"with {spec.input_size}", weights)
    # the graph is already folded: evaluate must not fold it again
    return Embedder(module, "onnxruntime", name, spec.input_size, False, os.fspath(weights), meta)


def _exported(backbone: str, weights, device, threads) -> Embedder:
    """``--engine onnxruntime`` with torch weights (or none): export to a temporary file and open it."""
    from .weights import load_backbone
    from .onnx_export import backbone_metadata, export_module
    from ..registry import get_backbone

    spec = get_backbone(backbone)
    model = load_backbone(backbone, weights)
    with tempfile.TemporaryDirectory(prefix="arcbench-onnx-") as tmp:
        path = os.path.join(tmp, f"{backbone}.onnx")
        info = export_module(model, path, input_size=spec.input_size, fold_bn=spec.fold_bn, name=backbone,
                             metadata=backbone_metadata(backbone, spec, weights and os.fspath(weights), "fp32"))
        module, meta, _ = open_onnx(path, device, threads)  # the session holds the graph in memory
    note = f"exported to ONNX on the fly ({info['exporter']} exporter, opset {info['opset']})"
    return Embedder(module, "onnxruntime", backbone, spec.input_size, False,
                    weights and os.fspath(weights), meta, [note])
