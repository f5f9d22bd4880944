"""A collection's int8 encoder: calibrated (by a worker, on the first images of the
collection's first load), recorded under the data dir, and used by loads and queries.

Loads use the int8 model when its record says it passed the gate and beat the collection's
own runtime at the load batch. Queries run one image: the API times the int8 model against
its query runtime at batch 1 in the background, and switches once int8 wins; until then,
and if it never does, queries stay on the other runtime, which the gate's mixed figure
(fp32 queries against int8 vectors, and the reverse) covers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from app.core.config import Settings
from app.core.vectorstore import CollectionMeta
from app.ml import int8, int8_gate
from app.ml.cpu import cpu_info
from app.ml.encoder import Encoder
from app.ml.int8_store import Int8Record, Int8State, Int8Store, int8_enabled
from app.ml.runtime_choice import Purpose, probe_batch
from app.ml.trunks import TrunkFn

log = logging.getLogger(__name__)
Race = Callable[[dict[str, TrunkFn], torch.Tensor], dict[str, float]]

RUNTIME = "openvino-int8"
# Images of a collection's first load that calibrate and gate its int8 model.
CALIBRATION_IMAGES = 64


def why_not_here(settings: Settings, encoder: Encoder) -> str | None:
    """Why int8 may not be tried for collections of `encoder` in this process (None: it may)."""
    if settings.int8 != "auto":
        return "PICSEARCH_INT8=off"
    if not int8_enabled(settings):
        return f"PICSEARCH_PRECISION={settings.precision} fixes the precision"
    if encoder.device.type != "cpu":
        return f"the model runs on {encoder.device.type}, and int8 is for CPUs"
    if "compile" in encoder.info.runtime:
        return "torch.compile runs the model"
    if not int8.nncf_available():
        return "OpenVINO and NNCF are not installed"
    return None


def usable_here(settings: Settings, encoder: Encoder) -> bool:
    """Whether int8 may be tried for collections of `encoder` in this process."""
    return why_not_here(settings, encoder) is None


def calibrate(
    store: Int8Store,
    name: str,
    meta: CollectionMeta,
    encoder: Encoder,
    pixels: np.ndarray,
    race: Race = int8_gate.race,
) -> Int8Record:
    """Gate the int8 recipes on `pixels` (a collection's first images), time the one that
    passes against `encoder`'s runtime at its load batch, and record the verdict."""
    threads = torch.get_num_threads()
    x = int8.normalised(pixels)
    result = int8_gate.run_gate(encoder.trunk, x, encoder.pooling, encoder.image_size, threads)
    speeds: dict[str, float] = {}
    own_micro = min(encoder.micro_batch, len(x))
    micro = own_micro
    state: Int8State = "refused"
    reason = result.reason()
    if result.accepted is not None and result.fn is not None:
        own = f"{encoder.info.runtime}-{encoder.info.precision}"
        # channels-last, as the encoder feeds its runtime
        timed = x.contiguous(memory_format=torch.channels_last)
        speeds = race({RUNTIME: result.fn, own: encoder.run_trunk}, timed[:own_micro])
        # int8 at its own best load batch: it can differ from the fp32/bf16 runtime's
        for batch in _load_batches(encoder, len(x)) - {own_micro}:
            faster = race({RUNTIME: result.fn}, timed[:batch])[RUNTIME]
            if faster > speeds[RUNTIME]:
                speeds[RUNTIME], micro = faster, batch
        if speeds[RUNTIME] > speeds[own]:
            state = "accepted"
            int8.save(result.model, store.model_file(name, meta))
        else:
            reason += "; but int8 is not faster here"
        reason += (
            f" ({RUNTIME} {speeds[RUNTIME]:.2f} img/s at batch {micro} vs {own} "
            f"{speeds[own]:.2f} at batch {own_micro})"
        )
    record = Int8Record(
        state=state,
        reason=reason,
        recipe=result.accepted.name if result.accepted else None,
        figures=result.figures_json(),
        images_per_s=speeds,
        micro_batch=micro,
        calibration_images=len(x),
        cpu=cpu_info().describe(),
        seconds=result.seconds,
    )
    store.write(name, meta, record)
    log.info("int8 for collection %s: %s: %s", name, state, reason)
    return record


def _load_batches(encoder: Encoder, images: int) -> set[int]:
    """The load batches the CPU runtime measurement tried for `encoder` (up to `images`)."""
    report = encoder.runtime_report
    tried = {t.micro_batch for t in report.trials} if report else set()
    return {b for b in tried | {encoder.micro_batch} if b <= images} or {images}


def failed_record(exc: BaseException, images: int) -> Int8Record:
    """A refusal for a calibration that failed outright (recorded: not tried again)."""
    reason = f"int8 calibration failed: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    return Int8Record("refused", reason, None, [], {}, 0, images, cpu_info().describe(), 0.0)


@dataclass
class _Loaded:
    version: int  # the record file's mtime_ns: a new calibration replaces the model
    record: Int8Record
    encoder: Encoder | None = None  # the int8 encoder, once built (and, for queries, faster)
    note: str = ""


class Int8Encoders:
    """Per process: each collection's int8 encoder, when its record accepts one."""

    def __init__(self, settings: Settings, purpose: Purpose, race: Race = int8_gate.race) -> None:
        self.settings = settings
        self.race = race  # how int8 is timed against the other runtime
        self.store = Int8Store(settings)
        self.purpose = purpose
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    def _current(self, name: str, meta: CollectionMeta) -> _Loaded | None:
        path = self.store.record_file(name, meta)
        try:
            version = path.stat().st_mtime_ns
        except OSError:
            with self._lock:
                self._loaded.pop(name, None)  # dropped, or never calibrated
            return None
        with self._lock:
            loaded = self._loaded.get(name)
        if loaded is not None and loaded.version == version:
            return loaded
        record = self.store.read(name, meta)
        if record is None:
            return None
        loaded = _Loaded(version, record)
        with self._lock:
            self._loaded[name] = loaded
        return loaded

    def encoder(
        self, name: str, meta: CollectionMeta, base: Encoder, wait: bool = False
    ) -> Encoder:
        """The encoder `name`'s vectors are made with here: int8 when accepted (for
        queries: once it has been timed faster at batch 1, in the background unless
        `wait`), else `base`."""
        if not usable_here(self.settings, base):
            return base
        loaded = self._current(name, meta)
        if loaded is None or not loaded.record.accepted:
            return base
        if loaded.encoder is not None:
            return loaded.encoder
        with self._lock:  # one build per record; a failed one is not retried
            started, loaded.note = bool(loaded.note), loaded.note or "building the int8 model"
        if started:
            return loaded.encoder or base
        if self.purpose == "batch" or wait:
            self._build(loaded, name, meta, base)
        else:
            loaded.note = "timing int8 against the query runtime"
            args = (loaded, name, meta, base)
            threading.Thread(target=self._build, args=args, name="int8-build", daemon=True).start()
        return loaded.encoder or base

    def _build(self, loaded: _Loaded, name: str, meta: CollectionMeta, base: Encoder) -> None:
        try:
            fn = int8.load(
                self.store.model_file(name, meta), base.image_size, torch.get_num_threads()
            )
            if self.purpose == "query":
                x = probe_batch(1, base.image_size)
                own = f"{base.info.runtime}-{base.info.precision}"
                speeds = self.race({RUNTIME: fn, own: base.run_trunk}, x)
                figures = f"{RUNTIME} {speeds[RUNTIME]:.2f} vs {own} {speeds[own]:.2f} img/s"
                if speeds[RUNTIME] <= speeds[own]:
                    loaded.note = f"queries stay on {own}: int8 not faster at batch 1 ({figures})"
                    return
                loaded.note = f"queries run int8 ({figures} at batch 1)"
            else:
                loaded.note = f"loads run int8 at batch {loaded.record.micro_batch}"
            micro = 1 if self.purpose == "query" else loaded.record.micro_batch
            loaded.encoder = base.with_runtime(fn, RUNTIME, "int8", micro)
        except Exception as exc:  # a model that does not load here is not used
            loaded.note = f"int8 model does not run here: {type(exc).__name__}: {exc}"[:300]
            log.warning("collection %s: %s", name, loaded.note)

    def state(self, name: str, meta: CollectionMeta) -> dict[str, Any] | None:
        """What /api/v1/stats shows: the record, and whether this process uses it."""
        loaded = self._current(name, meta)
        if loaded is None:
            return None
        data = loaded.record.to_json()
        data.pop("key", None)
        data["in_use"] = loaded.encoder is not None
        data["note"] = loaded.note
        return data

    def forget(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)
