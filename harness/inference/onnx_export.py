"""Exporting a backbone to ONNX: the graph a deployment runs, with what it needs to know in the file.

The exported graph is the module :func:`arcbench.inference.weights.inference_model` embeds with
(conv+BatchNorm folded where the backbone spec allows it), with a dynamic batch
dimension, one input ``input`` (N, 3, S, S) and one output ``embedding`` (N, D), before
L2 normalisation.  ``metadata_props`` carry the preprocessing so a deployment can feed
the model without reading this code.  torch's exporter does the work: the dynamo-based
one where torch has it (and onnxscript is installed), the TorchScript-based one otherwise.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from typing import Dict, Optional, Sequence

import torch

from ..errors import ArcbenchError

DEFAULT_OPSET = 17
INSTALL_HINT = "pip install 'arcbench[onnx]'"
#: how every image is prepared before the graph sees it (arcbench.data.preprocess), as written into the file
PREPROCESSING = ("RGB; letterbox to input_size x input_size keeping the aspect ratio (bicubic), pasted centred "
                 "on a (128,128,128) grey canvas; x = (pixel / 255 - 0.5) / 0.5; NCHW float")
#: largest |torch - onnxruntime| over unit embeddings an fp32 file may show (else it is not kept)
FP32_BOUND = 1e-4
#: the same for ``--dtype fp16``.  fp16 keeps 11 significant bits (unit round-off 4.9e-4); measured on
#: the reference photos and generated faces, the trained reference MobileFaceNet and iresnet18-200 differ
#: by at most 9.2e-4 (docs/PERFORMANCE.md), so 1e-2 leaves 10x room for other nets and inputs while a
#: broken graph (a wrong layer moves unit embeddings by 0.1-1) still fails.
FP16_BOUND = 1e-2
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def require(module: str = "onnxruntime", what: str = "ONNX export"):
    """Import one of the optional ONNX packages or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ArcbenchError(f"{what} needs the optional packages onnx and onnxruntime ({module} is not "
                            f"installed): {INSTALL_HINT}") from None


def exporter_name() -> str:
    """``dynamo`` where this torch's ``torch.onnx.export`` takes ``dynamo=`` and onnxscript is
    installed, else ``torchscript`` (torch 2.0 - 2.4, or no onnxscript)."""
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" in params and importlib.util.find_spec("onnxscript") is not None:
        return "dynamo"
    return "torchscript"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Embedding(torch.nn.Module):
    """The backbone with its output flattened to (N, D): the graph's ``embedding``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).flatten(1)


@contextlib.contextmanager
def _quiet(sink: io.StringIO):
    """Keep the exporter's chatter (Python warnings, torch logs, prints, C++ writes to fd 1/2) in ``sink``:
    a successful export prints our lines only; ``--debug`` shows the chatter of a failed one."""
    saved_fds = []
    tmp = tempfile.TemporaryFile(mode="w+b")
    try:
        for fd in (1, 2):
            try:
                saved_fds.append((fd, os.dup(fd)))
            except OSError:
                continue
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, _ in saved_fds:
            os.dup2(tmp.fileno(), fd)
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                warnings.simplefilter("ignore")
                yield
        finally:
            logging.disable(previous)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, saved in saved_fds:
                os.dup2(saved, fd)
            tmp.seek(0)
            sink.write(tmp.read().decode("utf-8", "replace"))
    finally:
        for _, saved in saved_fds:
            os.close(saved)
        tmp.close()


_OPERATOR = [re.compile(p) for p in (
    r"op='([\w.:]+)'",                                   # dynamo: No ONNX function found for <OpOverload(op=...
    r"operator '([\w.:]+)'",                             # torchscript: Exporting the operator 'aten::x' ...
    r"target=torch\.ops\.([\w.]+?)(?:\.default)?\]?\b",  # dynamo: Error when translating node ... target=...
)]


def failure_message(exc: BaseException) -> str:
    """One line out of an exporter failure: the operator it could not translate where it names one,
    else the first line of the innermost cause."""
    chain, e = [], exc
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = "\n".join(str(c) for c in chain)
    for pattern in _OPERATOR:
        found = pattern.search(text)
        if found:
            return f"operator {found.group(1)} could not be translated to ONNX"
    inner = chain[-1]
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    return f"{type(inner).__name__}: {(lines[0] if lines else '')[:240]}"


def _export(module: torch.nn.Module, example: torch.Tensor, path: str, opset: int, exporter: str) -> None:
    kwargs = dict(opset_version=opset, input_names=["input"], output_names=["embedding"])
    if exporter == "dynamo":
        params = inspect.signature(torch.onnx.export).parameters
        extra = {"fallback": False} if "fallback" in params else {}
        torch.onnx.export(module, (example,), path, dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), **extra, **kwargs)
    else:
        extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(module, (example,), path, do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, **extra, **kwargs)


def export_module(model: torch.nn.Module, out, *, input_size: int, fold_bn: bool, opset: int = DEFAULT_OPSET,
                  dtype: str = "fp32", metadata: Optional[Dict[str, str]] = None, name: str = "backbone",
                  exporter: Optional[str] = None, debug: bool = False) -> dict:
    """Write ``model`` (left unchanged) to ``out`` as ONNX; ``{"exporter", "opset", "seconds"}``.

    Raises a one-line :class:`ArcbenchError` naming the failing operator when the graph cannot be
    exported (``debug``: the exporter's own output is printed and its exception chained)."""
    import time

    onnx = require("onnx")
    from ..inference.weights import inference_model

    if dtype not in DTYPES:
        raise ArcbenchError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    exporter = exporter or exporter_name()
    model = model.to("cpu").eval()
    folded = inference_model(model, channels_last=False, fold_bn=fold_bn)
    if folded is model:  # keep the caller's module as it was
        import copy

        folded = copy.deepcopy(model)
    module = _Embedding(folded.to(DTYPES[dtype])).eval()
    example = torch.zeros(2, 3, input_size, input_size, dtype=DTYPES[dtype])  # batch 2: 1 would be specialised
    sink = io.StringIO()
    start = time.perf_counter()
    try:
        with _quiet(sink):
            _export(module, example, os.fspath(out), opset, exporter)
    except Exception as exc:
        if debug:
            sys.stderr.write(sink.getvalue())
        raise ArcbenchError(f"{name}: cannot export to ONNX ({exporter} exporter, opset {opset}): "
                            f"{failure_message(exc)} (--debug shows the exporter's traceback)") from exc
    seconds = time.perf_counter() - start
    proto = onnx.load(os.fspath(out))
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    props = {"exporter": f"torch.onnx ({exporter}), torch {torch.__version__}", "dtype": dtype,
             "opset": str(opset_used), **(metadata or {})}
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in props.items()})
    onnx.save(proto, os.fspath(out))
    return {"exporter": exporter, "opset": opset_used, "seconds": seconds}


def backbone_metadata(backbone: str, spec, weights: Optional[str], dtype: str) -> Dict[str, str]:
    """The ``metadata_props`` of an arcbench export: how to feed the graph and where it came from."""
    from .. import __version__

    return {
        "backbone": backbone,
        "input_size": str(spec.input_size),
        "input_layout": "NCHW",
        "color": "RGB",
        "preprocessing": PREPROCESSING,
        "normalization": "(x/255-0.5)/0.5",
        "embedding_size": str(spec.embedding_size),
        "embedding": "unnormalised; L2-normalise, distance = Euclidean distance of unit embeddings (0..2)",
        "weights": os.path.basename(weights) if weights else "(random initialisation)",
        "weights_sha256": file_sha256(weights) if weights else "",
        "arcbench_version": __version__,
        "dtype": dtype,
    }


def check_images(input_size: int, images: Sequence[str] = (), count: int = 8):
    """``(batch, label)``: the faces the check embeds, preprocessed like evaluation does.

    ``images``: files or folders (their image files, sorted); none: ``count`` generated synthetic
    faces (arcbench's embedded face generator: deterministic, no download)."""
    from ..data.preprocess import load_tensor

    files = []
    for item in images:
        if os.path.isdir(item):
            files += sorted(os.path.join(item, f) for f in os.listdir(item)
                            if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp")))
        else:
            files.append(item)
    if images and not files:
        raise ArcbenchError("no image files to check with", images[0])
    if files:
        files = files[:max(count, 1)]
        batch = torch.stack([load_tensor(f, input_size) for f in files])
        return batch, f"{len(files)} image(s) from {', '.join(images)}"
    from ..data.synth_face import render_jpeg

    batch = torch.stack([load_tensor(render_jpeg(0, i, 0), input_size, what=f"synthetic face {i}")
                         for i in range(count)])
    return batch, f"{count} generated synthetic faces"


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float().flatten(1), dim=1)


def max_difference(model: torch.nn.Module, session_module: torch.nn.Module, batch: torch.Tensor) -> float:
    """Largest |a - b| between the unit embeddings torch (fp32, eager, unfolded) and the ONNX graph give."""
    model = model.to("cpu").float().eval()
    with torch.inference_mode():
        ref = unit(model(batch))
        if not bool(torch.isfinite(ref).all()):
            raise ArcbenchError("torch's own embeddings of the check images are not finite (the weights overflow); "
                                "there is nothing to compare the ONNX graph with")
        got = unit(session_module(batch))
    return float((ref - got).abs().max())


def bound_for(dtype: str) -> float:
    return FP16_BOUND if dtype == "fp16" else FP32_BOUND
