"""NVIDIA GPUs: nccl collectives, fp16 autocast + GradScaler (bf16 selectable)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from arcbench import hookimpl
from arcbench.device import Device

#: Dense peak FLOP/s by GPU model substring: (fp32, tf32, fp16 tensor cores, bf16 tensor cores).
#: From the vendors' data sheets (no sparsity); SXM parts where two form factors exist.
#: ``None`` means the GPU has no such unit (no TF32/bf16 before Ampere).
PEAK_FLOPS = {
    "H200": (67e12, 494.5e12, 989.5e12, 989.5e12),
    "H100": (67e12, 494.5e12, 989.5e12, 989.5e12),
    "A100": (19.5e12, 156e12, 312e12, 312e12),
    "L40S": (91.6e12, 183e12, 362e12, 362e12),
    "A10": (31.2e12, 62.5e12, 125e12, 125e12),
    "V100": (15.7e12, None, 125e12, None),
    "T4": (8.1e12, None, 65e12, None),
    "RTX 4090": (82.6e12, 82.6e12, 165.2e12, 165.2e12),
    "RTX 3090": (35.6e12, 35.6e12, 71e12, 71e12),
}


def peak_flops_for(device_name: str, dtype: torch.dtype, tf32: bool = False) -> Optional[float]:
    """Peak FLOP/s of the GPU named ``device_name`` for ``dtype``; None when not in the table.

    The longest matching model name wins, so "A100" is never read as "A10".
    """
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key in device_name:
            fp32, tf32_peak, fp16, bf16 = PEAK_FLOPS[key]
            if dtype == torch.float16:
                return fp16
            if dtype == torch.bfloat16:
                return bf16
            return tf32_peak if (tf32 and tf32_peak) else fp32
    return None


class CUDADevice(Device):
    name = "cuda"
    dist_backend = "nccl"
    amp_dtype = torch.float16
    torch_type = "cuda"

    def is_available(self) -> Tuple[bool, str]:
        try:
            if torch.cuda.is_available():
                return True, ""
        except Exception as exc:  # a broken driver should read as unavailable
            return False, f"unavailable: {exc}"
        return False, "unavailable: no CUDA device visible to torch"

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def torch_device(self, local_rank: int = 0) -> torch.device:
        return torch.device("cuda", local_rank)

    def set_device(self, local_rank: int = 0) -> None:
        torch.cuda.set_device(local_rank)

    def grad_scaler(self, enabled: bool = True, dtype=None):
        dtype = dtype or self.amp_dtype
        if enabled and dtype == torch.float16:
            try:
                return torch.amp.GradScaler("cuda")
            except (AttributeError, TypeError):  # torch < 2.3
                return torch.cuda.amp.GradScaler()
        return super().grad_scaler(False)

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def memory_stats(self) -> dict:
        return {"peak_memory": torch.cuda.max_memory_allocated(),
                "allocated": torch.cuda.memory_allocated()}

    def reset_peak_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats()

    def device_name(self, local_rank: int = 0) -> str:
        return torch.cuda.get_device_name(local_rank)

    def peak_flops(self, dtype: torch.dtype = torch.float32) -> Optional[float]:
        if not self.is_available()[0]:
            return None
        tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
        return peak_flops_for(self.device_name(), dtype, tf32=tf32)

    def seed(self, n: int) -> None:
        torch.manual_seed(n)
        torch.cuda.manual_seed_all(n)

    def describe(self) -> dict:
        info = super().describe()
        if info["available"]:
            props = torch.cuda.get_device_properties(0)
            info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        device_count=torch.cuda.device_count(),
                        total_memory=props.total_memory,
                        capability=f"{props.major}.{props.minor}")
        return info


@hookimpl
def register_devices(register):
    register(CUDADevice())
