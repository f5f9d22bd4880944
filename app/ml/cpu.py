"""What the CPU is: its model name and the instruction-set flags that decide fast paths."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Flags that change which kernels oneDNN/OpenVINO can run; shown in reports and cache keys.
NOTABLE_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
)
# Environment variables that restrict the kernels torch/oneDNN may use (e.g. to check how
# a path behaves on an AVX2-only CPU) or change how their threads wait (the launcher starts
# the API with OMP_WAIT_POLICY=PASSIVE); a measurement is only valid under the same values.
ISA_ENVIRONMENT = (
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "OMP_WAIT_POLICY",
    "OMP_NUM_THREADS",
    "KMP_BLOCKTIME",
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    logical_cpus: int

    @property
    def notable_flags(self) -> list[str]:
        return [flag for flag in NOTABLE_FLAGS if flag in self.flags]

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16) and oneDNN may
        use it (ONEDNN_MAX_CPU_ISA=AVX2 forbids it); elsewhere bf16 is emulated, slower than
        fp32, or refused."""
        limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
        limit = limit.upper()
        allowed = limit in ("", "ALL", "DEFAULT") or any(
            part in limit for part in ("BF16", "AMX", "FP16", "AVX10")
        )
        return allowed and bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def isa_restrictions(self) -> dict[str, str]:
        return {name: os.environ[name] for name in ISA_ENVIRONMENT if os.environ.get(name)}

    def describe(self) -> str:
        """One line for logs and report headers, e.g. 'AMD EPYC (2 CPUs; avx2 fma …)'."""
        limits = "".join(f", {k}={v}" for k, v in self.isa_restrictions.items())
        flags = " ".join(self.notable_flags) or "no AVX2"
        return f"{self.model} ({self.logical_cpus} CPUs; {flags}{limits})"


def parse_cpuinfo(text: str, logical_cpus: int | None = None) -> CpuInfo:
    """A CpuInfo from the text of /proc/cpuinfo (the first processor's model and flags)."""
    model = ""
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(
        model=model or platform.processor() or platform.machine() or "unknown CPU",
        flags=flags,
        logical_cpus=logical_cpus or os.cpu_count() or 1,
    )


@lru_cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (no flags on systems without /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 in hardware; `cpuinfo` is /proc/cpuinfo's text (this
    machine's when None)."""
    info = cpu_info() if cpuinfo is None else parse_cpuinfo(cpuinfo)
    return info.native_bf16


def lower_cpu_priority(nice: int) -> int:
    """Lower this process's CPU priority to `nice` (never raise it) and return the nice value
    it runs at. On Linux the value is per thread and inherited, so call it before starting
    the threads that should run at it (model, decoding, upserts)."""
    current = os.nice(0)
    if nice > current:
        try:
            current = os.nice(nice - current)
        except OSError:  # not allowed here (e.g. a sandbox): keep running as we are
            pass
    return current
