"""Retrieval quality: `picsearch eval` measures how well the vectors find what they should.

Three measurements, all in memory with exact search: the vectors are L2-normalised, so ranking
by the dot product (numpy) is exactly what Milvus FLAT with metric COSINE returns; an
approximate index (HNSW, IVF) can only rank the same or worse. Nothing is written to Milvus.

* A labelled folder `<class>/<images>`: every image queries all the others (itself excluded);
  images of its class are the relevant ones. mAP@k, precision@1, precision@10 and recall@k,
  per class and overall.
* A folder of originals: the originals are indexed, and near-duplicate queries are generated
  from a sample of them (crop, resize, JPEG recompression, colour shift, flip, rotation,
  grayscale, overlaid text, and all of crop + colour + text + JPEG at once; see
  `duplicates.TRANSFORM_NOTES`); a hit is the original ranked first (hit@1) or in the top 10
  (hit@10).
* A folder of originals (`--crops`): the originals are indexed, and detail crops are cut from
  a sample of them at their own scale (rectangles and circles 64-160 px across), each also
  resized 0.5x and 2x, JPEG-recompressed and colour-shifted (`crops.CROP_NOTES`); a hit is the
  crop's source ranked first (top-1) or in the top 10. Flat crops (sky, walls) are scored apart.

Without `--compare` the service's configured recipe is measured through the service's own code
path (`decode_image` + `Encoder.embed`). With `--compare` a grid of recipes (pooling x resize x
input size, plus PCA-whitening of the best ones) is computed in this package from the service's
trunk (`Encoder.feature_map`): one forward pass per (resize, size) is shared by all poolings, and
each image is decoded once per size. Its `squash-bilinear` rows reproduce the service path exactly
(a unit test checks this); the other resize modes and R-MAC exist only here.
"""

from app.evaluation.command import register
from app.evaluation.options import EvalOptions
from app.evaluation.run import run_evaluation

__all__ = ["EvalOptions", "register", "run_evaluation"]
