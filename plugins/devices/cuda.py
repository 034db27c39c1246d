"""NVIDIA GPUs: nccl collectives, bf16 autocast on compute capability 8.0+ (else fp16 + GradScaler;
``--amp-dtype`` chooses), fused optimizer steps, cuDNN autotuning, TF32-aware peaks."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from arcbench import hookimpl
from arcbench.device import AcceleratorDevice

#: Dense peak FLOP/s by GPU model substring: (fp32, tf32, fp16 tensor cores, bf16 tensor cores).
#: From NVIDIA's data sheets; the sheets print tensor-core figures with 2:4 sparsity, halved here.
#: Form factors differ (clocks and power), so each has its own row; a name matches its longest key,
#: case-insensitively ("NVIDIA H100 PCIe" -> "H100 PCIE"; "NVIDIA H100 80GB HBM3", the SXM part,
#: -> "H100").  ``None`` means the GPU has no such unit (no TF32/bf16 before Ampere).
#: Sources (NVIDIA data sheets):
#: * H100 SXM / PCIe / NVL: nvidia.com/en-us/data-center/h100/ (H100 Tensor Core GPU data sheet):
#:   SXM 67 / 989 / 1,979 / 1,979 TF; PCIe 51 / 756 / 1,513 / 1,513; NVL 60 / 835 / 1,671 / 1,671
#:   (sparse tensor figures).  The SXM dense 989.4 TF fp16/bf16 and 66.9 TF fp32 also match the
#:   Hopper architecture paper's table; the PCIe card's 51.2 TF fp32 matches its clocks.
#: * H200 SXM / NVL: nvidia.com/en-us/data-center/h200/ (H200 data sheet): SXM as H100 SXM
#:   (same GH100 compute, more memory); NVL 60 / 835 / 1,671 / 1,671 (sparse).
#: * A100 SXM / PCIe: nvidia.com/en-us/data-center/a100/ (A100 data sheet): both 19.5 TF fp32,
#:   156 TF tf32, 312 TF fp16/bf16 dense (the PCIe card runs at lower power, same peak).
#: * L40S: nvidia.com/en-us/data-center/l40s/ (L40S data sheet): 91.6 TF fp32, 183 TF tf32 and
#:   362.05 TF fp16/bf16 dense (366 / 733 with sparsity).
#: The SXM and fp32 figures are confirmed against NVIDIA's data sheets; the PCIe/NVL tensor figures are
#: as read from NVIDIA's sheets, not yet confirmed: check them against the sheet of the card you qualify.
PEAK_FLOPS = {
    "H200 NVL": (60e12, 417.5e12, 835.5e12, 835.5e12),
    "H200": (67e12, 494.5e12, 989.5e12, 989.5e12),
    "H100 NVL": (60e12, 417.5e12, 835.5e12, 835.5e12),
    "H100 PCIE": (51e12, 378e12, 756.5e12, 756.5e12),
    "H100": (67e12, 494.5e12, 989.5e12, 989.5e12),
    "A100": (19.5e12, 156e12, 312e12, 312e12),
    "L40S": (91.6e12, 183e12, 362.05e12, 362.05e12),
    "A10": (31.2e12, 62.5e12, 125e12, 125e12),
    "V100": (15.7e12, None, 125e12, None),
    "T4": (8.1e12, None, 65e12, None),
    "RTX 4090": (82.6e12, 82.6e12, 165.2e12, 165.2e12),
    "RTX 3090": (35.6e12, 35.6e12, 71e12, 71e12),
}


def _peak_row(device_name: str):
    """The table row of the longest key in ``device_name`` (case-insensitive), or None."""
    name = device_name.upper()
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_FLOPS[key]
    return None


def peak_flops_for(device_name: str, dtype: torch.dtype, tf32: bool = False) -> Optional[float]:
    """Peak FLOP/s of the GPU named ``device_name`` for ``dtype``; None when not in the table.

    The longest matching model name wins, so "A100" is never read as "A10" nor an H100 PCIe as an SXM.
    """
    row = _peak_row(device_name)
    if row is None:
        return None
    fp32, tf32_peak, fp16, bf16 = row
    if dtype == torch.float16:
        return fp16
    if dtype == torch.bfloat16:
        return bf16
    return tf32_peak if (tf32 and tf32_peak) else fp32


class CUDADevice(AcceleratorDevice):
    name = "cuda"
    auto_priority = 20
    dist_backend = "nccl"
    amp_dtype = torch.float16
    torch_type = "cuda"
    #: every inductor mode: reduce-overhead and max-autotune capture CUDA graphs
    compile_modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

    def runtime(self):
        return torch.cuda

    def is_available(self) -> Tuple[bool, str]:
        try:
            if torch.cuda.is_available():
                return True, ""
        except Exception as exc:  # a broken driver should read as unavailable
            return False, f"unavailable: {exc}"
        return False, "unavailable: no CUDA device visible to torch"

    def default_amp_dtype(self) -> str:
        """bf16 where the card has bf16 tensor cores (compute capability 8.0+: no GradScaler), else fp16."""
        try:
            major, _ = torch.cuda.get_device_capability(self.index or 0)
        except Exception:  # no card visible: the plugin's own default
            return super().default_amp_dtype()
        return "bf16" if major >= 8 else "fp16"

    def configure(self, deterministic: bool = False) -> None:
        """cuDNN autotunes its convolution algorithms (fixed 112x112 shapes: warm-up steps only), as
        the reference trainers do; ``--deterministic`` turns that off with the deterministic algorithms."""
        if deterministic:
            import os

            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
        super().configure(deterministic)
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = bool(deterministic)

    def grad_scaler(self, enabled: bool = True, dtype=None):
        dtype = dtype or self.amp_dtype
        if enabled and dtype == torch.float16:
            try:
                return torch.amp.GradScaler("cuda")
            except (AttributeError, TypeError):  # torch < 2.3
                return torch.cuda.amp.GradScaler()
        return super().grad_scaler(False)

    def uses_tf32(self) -> bool:
        """fp32 convolutions run on TF32 tensor cores (cuDNN's default), so "fp32" means TF32 here."""
        return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)

    def _has_tf32(self) -> bool:
        row = _peak_row(self.device_name())
        return row is not None and row[1] is not None

    def precision_label(self, precision: str) -> str:
        if precision == "fp32" and self.is_available()[0] and self.uses_tf32() and self._has_tf32():
            return "fp32 (tf32)"
        return precision

    def peak_flops(self, dtype: torch.dtype = torch.float32) -> Optional[float]:
        if not self.is_available()[0]:
            return None
        return peak_flops_for(self.device_name(), dtype, tf32=self.uses_tf32())

    def onnx_providers(self) -> list:
        """CUDA on the bound card (a session that does not enable it is refused, see arcbench.inference.engines)."""
        return [("CUDAExecutionProvider", {"device_id": self.index or 0})]

    def describe(self) -> dict:
        info = super().describe()
        if info["available"]:
            props = torch.cuda.get_device_properties(self.index or 0)
            info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        total_memory=props.total_memory, capability=f"{props.major}.{props.minor}",
                        tf32=self.uses_tf32(), cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
        return info


@hookimpl
def register_devices(register):
    register(CUDADevice())
