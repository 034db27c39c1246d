"""The host CPU: gloo collectives, bfloat16 autocast for AMP."""
from __future__ import annotations

import os

import torch

from arcbench import hookimpl
from arcbench.device import Device, cpu_model


class CPUDevice(Device):
    name = "cpu"
    auto_priority = 10  # always there: the last resort of --device auto
    dist_backend = "gloo"
    amp_dtype = torch.bfloat16
    torch_type = "cpu"

    def device_count(self) -> int:
        # Processes on one host share the CPU; allow as many as there are cores.
        return os.cpu_count() or 1

    def device_name(self) -> str:
        return cpu_model()

    def onnx_providers(self) -> list:
        return ["CPUExecutionProvider"]

    def describe(self) -> dict:
        return {**super().describe(), "threads": torch.get_num_threads(), "cores": os.cpu_count()}


@hookimpl
def register_devices(register):
    register(CPUDevice())
