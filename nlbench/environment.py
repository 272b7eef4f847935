"""What a result records about the machine and software that produced it."""

from __future__ import annotations

import platform
import resource
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch


def git_sha() -> str | None:
    """The commit of the nlbench source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


#: /proc/cpuinfo flags of x86 bf16 arithmetic (AVX512-BF16, AMX) and ARM's (bf16).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU has bf16 instructions (None: unknown, e.g. not Linux).

    Without them torch emulates bf16 in fp32 and the CPU's bf16 path (``train.cpu_amp``) trains
    slower than fp32, not faster.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = {word for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for word in line.split(":", 1)[-1].split()}
    if not flags:
        return None
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def describe_environment(device: torch.device) -> dict[str, Any]:
    """Versions, device and host of a run."""
    import timm

    from nlbench import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "nlbench": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": name,
        "cpu_threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "git_sha": git_sha(),
    }


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident memory of the process (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
