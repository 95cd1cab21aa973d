"""What numerical reproducibility depends on, recorded with every result.

Same inputs and seed give the same numbers only on the same numerical stack: floating-point
sums are not associative, so the thread count (how a reduction is split), the BLAS and
LAPACK library and its version (which kernels run), the CPU's instruction sets (AVX-512 and
AMX kernels round differently from AVX2 ones), torch's deterministic-algorithm switch, the
float32 matmul precision (TF32 on GPUs) and the device all change the last bits, and the last
bits can change a greedy token. Evidence rounds floats to 6 significant digits
(checks.base.evidence_json), which hides most of this, but not a flipped argmax.

``numerical_environment()`` returns all of it as one JSON-able dict (pure torch + standard
library, no Django); the worker's runner puts it in every check run's provenance and the demo
in its findings.
"""

from __future__ import annotations

import os
import platform
import re
from functools import lru_cache
from typing import Any

# CPU flags that select different floating-point kernels (vector width, fused multiply-add,
# bf16/int8 matrix units).
KERNEL_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def numerical_environment(device: str = "cpu") -> dict[str, Any]:
    import torch

    return {
        "torch": torch.__version__,
        "threads": {
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
            "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        },
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_algorithms_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cpu_capability": _cpu_capability(),
        "build": build_info(),
        "cpu": cpu_info(),
        "device": device,
        "accelerator": _accelerator(device),
    }


def _cpu_capability() -> str | None:
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        return None


@lru_cache(maxsize=1)
def build_info() -> dict[str, Any]:
    """BLAS / LAPACK and the math libraries torch was built with (torch.__config__.show())."""
    import torch

    shown = torch.__config__.show()
    settings = dict(
        re.findall(r"\b(BLAS_INFO|LAPACK_INFO|USE_MKL|USE_MKLDNN|USE_OPENMP)=(\w+)", shown)
    )
    return {
        "blas": settings.get("BLAS_INFO"),
        "lapack": settings.get("LAPACK_INFO"),
        "mkl": _line(shown, "Math Kernel Library"),
        "onednn": _line(shown, "MKL-DNN") or _line(shown, "oneDNN"),
        "openmp": _line(shown, "OpenMP"),
        "lapack_enabled": "LAPACK is enabled" in shown,
        "parallel": _line(torch.__config__.parallel_info(), "ATen parallel backend"),
        "flags": settings,
    }


def _line(text: str, marker: str) -> str | None:
    for line in text.splitlines():
        if marker in line:
            return line.strip(" -\t")
    return None


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    model, flags = _proc_cpuinfo()
    return {
        "machine": platform.machine(),
        "model": model or platform.processor() or None,
        "logical_cpus": os.cpu_count(),
        "kernel_flags": [flag for flag in KERNEL_FLAGS if flag in flags],
    }


def _proc_cpuinfo() -> tuple[str | None, set[str]]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None, set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    return (
        model.group(1).strip() if model else None,
        set(flags.group(1).split()) if flags else set(),
    )


def _accelerator(device: str) -> dict[str, Any] | None:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return {
        "name": torch.cuda.get_device_name(device),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
