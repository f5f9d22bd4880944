"""Model figures: the model's multiply-accumulates per image, and the machine's matmul peak."""

from __future__ import annotations

import time
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


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, reps: int = 8) -> float:
    """Best observed GFLOP/s of a square matmul in `dtype`: the machine's practical peak."""
    import torch

    n = 4096 if device.type == "cuda" else 2048
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9
