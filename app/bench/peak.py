"""Model figures: the model's multiply-accumulates per image, and the machine's peak (the
better of a square matmul and a VGG-sized 3x3 convolution)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def count_macs(trunk: torch.nn.Module, image_size: int) -> float:
    """Multiply-accumulates of one `image_size`² image through `trunk`'s convolutions."""
    import torch

    total = 0.0

    def hook(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, torch.nn.Conv2d)
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.inference_mode():
            device = next(trunk.parameters()).device
            trunk(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total


def _best_seconds(run: Callable[[], object], device: torch.device, reps: int) -> float:
    import torch

    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return best


def peak_gflops(dtype: torch.dtype, device: torch.device, reps: int = 8) -> float:
    """The machine's practical peak in `dtype`: best observed GFLOP/s of a square matmul or
    of a 3x3 convolution as VGG16 runs them. The convolution counts too since the BLAS behind
    matmul may not use what the CPU has (fp32 on an AVX-512 EPYC: matmul ~180 GFLOP/s,
    oneDNN's convolution ~410)."""
    import torch

    n = 4096 if device.type == "cuda" else 2048
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    matmul = 2 * n**3 / _best_seconds(lambda: a @ b, device, reps)
    c, side = 256, 56  # VGG16's third block
    channels_last = torch.channels_last
    x = torch.randn(1, c, side, side, generator=gen).to(device=device, dtype=dtype)
    w = torch.randn(c, c, 3, 3, generator=gen).to(device=device, dtype=dtype)
    x, w = x.contiguous(memory_format=channels_last), w.contiguous(memory_format=channels_last)
    seconds = _best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, reps)
    conv = 2 * side * side * c * c * 9 / seconds
    return max(matmul, conv) / 1e9
