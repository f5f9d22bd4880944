"""What the photo modes of the bench (ingest, regions) start from: the photos copied into a
temporary folder, the Settings pointing at it, and the batch and query encoders, warmed up."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.bench.common import BenchError
from app.bench.images import prepare_images
from app.bench.options import BenchOptions, model_settings
from app.bench.runs import warm_up

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.ml.encoder import Encoder


@dataclass(frozen=True)
class PhotoBench:
    work: Path  # the temporary data dir (Milvus Lite, int8 models)
    folder: Path  # the photos, the only image root
    files: list[Path]
    settings: Settings
    encoder: Encoder  # loads
    query_encoder: Encoder  # queries: one image at a time, its own runtime choice on a CPU


@contextlib.contextmanager
def photo_bench(
    base: Settings, opts: BenchOptions, say: Callable[[str], None], compile_model: bool = False
) -> Iterator[PhotoBench]:
    """The photos of `opts.images` sampled or repeated to `opts.count` files in a temporary
    folder (removed on exit), and the encoders (loads through torch.compile if
    `compile_model`)."""
    from app.ml.encoder import Encoder

    if opts.images is None or not opts.images.is_dir():
        raise BenchError(f"--images must be a folder of photos, got {opts.images}")
    with tempfile.TemporaryDirectory(prefix="picsearch-bench-") as tmp:
        work = Path(tmp)
        folder = (work / "images").resolve()
        files = prepare_images(opts.images, opts.count, folder, opts.max_side)
        settings = model_settings(base, opts, image_roots=[folder], data_dir=work)
        say(f"{len(files)} images from {opts.images}; building {settings.model} encoders")
        encoder = Encoder(settings, compile=compile_model)
        # queries run as the API runs them: one image at a time, its own runtime choice
        query_encoder = (
            Encoder(settings, purpose="query") if encoder.device.type == "cpu" else encoder
        )
        warm_up(encoder, settings, len(files))
        yield PhotoBench(work, folder, files, settings, encoder, query_encoder)
