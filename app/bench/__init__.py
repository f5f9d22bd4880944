"""`picsearch bench`: how fast ingest and search are, measured against a naive reference.

Ingest mode (`ingest.py`, the default) indexes a folder of photos R times by our pipeline and
R times by the seed's naive loop, interleaved; index mode (`index.py`, `--index-only`) times
insert and search on synthetic vectors at several collection sizes.

Milvus: a temporary Milvus Lite server on a free port, stopped afterwards; with
PICSEARCH_MILVUS_URI set, ingest runs there instead and index mode measures both (or only the
server, with --skip-lite). Collections are named `bench_<random>_*` and dropped afterwards.

Heavy modules (torch, pymilvus, the pipeline) are imported inside functions, so that
registering the command keeps `picsearch --help` fast.
"""

from app.bench.command import register
from app.bench.common import BenchError
from app.bench.index import bench_index
from app.bench.ingest import bench_ingest
from app.bench.options import BenchOptions

__all__ = ["BenchError", "BenchOptions", "bench_index", "bench_ingest", "register"]
