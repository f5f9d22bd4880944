"""JPEG decoding on the model's GPU (nvJPEG through torchvision) for folder loads on CUDA.

On a GPU worker, Pillow on a few CPU threads cannot keep up with the model (~3 ms per
500x375 JPEG per thread). Plain JPEGs are therefore decoded in batches on the device and
resized there; anything else (PNG, CMYK, files the GPU decoder refuses, very large JPEGs)
goes through the CPU decoder `decode_image`, which also supplies the per-file error reason.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision

from app.ml.imageio import ImageDecodeError, decode_image

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"
# Larger JPEGs decode on the CPU in the DCT domain at 1/2-1/8 scale: a full-size GPU
# decode of a 50 MP photo would hold 150 MB of device memory per image for no gain.
GPU_DECODE_MAX_PIXELS = 24_000_000


# Start-of-frame markers nvJPEG decodes: baseline, extended and progressive Huffman.
GPU_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2})
_ALL_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # minus DHT, JPG, DAC
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


@dataclass(frozen=True)
class JpegFrame:
    marker: int  # the SOFn marker (0xC0 baseline, 0xC2 progressive, ...)
    precision: int  # bits per sample
    width: int
    height: int
    components: int  # 1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The frame header of a JPEG, read by walking its markers (no Pillow: this runs for
    every file of a GPU load, and Pillow's parser costs ~50 us holding the GIL)."""
    if not data.startswith(JPEG_MAGIC):
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _ALL_SOF_MARKERS:
            if length < 8 or pos + 10 > end:
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return JpegFrame(marker, data[pos + 4], width, height, data[pos + 9])
        if length < 2:
            return None
        pos += 2 + length
    return None


def gpu_decodable(data: bytes, max_pixels: int) -> bool:
    """Whether nvJPEG should decode `data`: an 8-bit Huffman JPEG, greyscale or colour (not
    CMYK), within the pixel limits, ending with its end-of-image marker. Truncated files go
    to Pillow, which reports them (nvJPEG would decode them with the missing part grey);
    so do files with data after the marker, which Pillow decodes fine."""
    frame = jpeg_frame(data)
    return (
        frame is not None
        and frame.marker in GPU_SOF_MARKERS
        and frame.precision == 8
        and frame.components in (1, 3)
        and 0 < frame.width * frame.height <= min(max_pixels, GPU_DECODE_MAX_PIXELS)
        and data.rstrip(b"\0")[-2:] == b"\xff\xd9"
    )


def resize_on_device(images: Sequence[torch.Tensor], size: int) -> tuple[torch.Tensor, list[int]]:
    """(3, H, W) uint8 images -> a (N, size, size, 3) uint8 batch, aspect squashed,
    antialiased bilinear (Pillow's BILINEAR filter, as `decode_image` uses), and the index
    into `images` of each row: images of one shape are resized in one call, so rows come
    grouped by shape rather than in input order."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        by_shape[tuple(img.shape)].append(i)
    parts: list[torch.Tensor] = []
    order: list[int] = []
    for indices in by_shape.values():
        x = torch.stack([images[i] for i in indices]).float()
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        parts.append(x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
        order.extend(indices)
    if not parts:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8), order
    return torch.cat(parts), order


def _decode_jpeg(
    data: torch.Tensor | list[torch.Tensor], device: torch.device
) -> torch.Tensor | list[torch.Tensor]:
    decoded: torch.Tensor | list[torch.Tensor] = torchvision.io.decode_jpeg(
        data, mode=torchvision.io.ImageReadMode.RGB, device=device, apply_exif_orientation=True
    )
    return decoded


def decode_jpegs(
    datas: Sequence[bytes], *, size: int, device: torch.device
) -> tuple[torch.Tensor, list[int]]:
    """Decode JPEGs on `device` in one batched call, EXIF orientation applied, and resize
    them to (size, size, 3) uint8 there. Returns the batch and, per row, the index into
    `datas` it came from; files the device decoder refuses are left out (one bad file fails
    the batched call, so the batch is then retried file by file)."""
    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    if not encoded:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8, device=device), []
    try:
        batch = _decode_jpeg(encoded, device)
        assert isinstance(batch, list)
        return resize_on_device(batch, size)
    except RuntimeError as exc:
        log.debug("batched device JPEG decode failed (%s); retrying file by file", exc)
    decoded: list[torch.Tensor] = []
    kept: list[int] = []
    for i, item in enumerate(encoded):
        try:
            single = _decode_jpeg(item, device)
        except RuntimeError:
            continue
        assert isinstance(single, torch.Tensor)
        decoded.append(single)
        kept.append(i)
    pixels, order = resize_on_device(decoded, size)
    return pixels.to(device), [kept[i] for i in order]


def decode_batch(
    datas: Sequence[bytes],
    *,
    size: int,
    max_pixels: int,
    device: torch.device,
    batched: bool | None = None,
) -> list[torch.Tensor | ImageDecodeError]:
    """Decode images to (size, size, 3) uint8 tensors on `device`, in order.

    `batched` (default: on CUDA) sends the plain JPEGs through `decode_jpegs`; the rest, and
    JPEGs the device refuses, go through `decode_image` on the CPU. Failures come back as
    ImageDecodeError in their slot. The two paths agree to cosine ~0.999, not bit for bit
    (full decode + antialiased resize vs. Pillow's DCT-domain draft for large JPEGs).
    """
    if batched is None:
        batched = device.type == "cuda"
    out: list[torch.Tensor | None] = [None] * len(datas)
    if batched:
        todo = [i for i, d in enumerate(datas) if gpu_decodable(d, max_pixels)]
        batch, order = decode_jpegs([datas[i] for i in todo], size=size, device=device)
        for row, index in zip(batch, order, strict=True):
            out[todo[index]] = row
    results: list[torch.Tensor | ImageDecodeError] = []
    for data, item in zip(datas, out, strict=True):
        if item is None:
            try:
                pixels = decode_image(data, size=size, max_pixels=max_pixels).pixels
            except ImageDecodeError as exc:
                results.append(exc)
                continue
            item = torch.from_numpy(pixels.copy()).to(device)
        results.append(item)
    return results
