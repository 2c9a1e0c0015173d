"""Dense vectors of a shard: the searchable index (float or binary FAISS) and the rescoring layer.

Index types (``DenseSpec.type``), one class each in ``datastores.dense.families`` (the registry
``FAMILIES``; ``family(name)`` is the one place a type name is parsed):

* ``float-flat`` (alias ``flat-ip``): exact inner product over float32; float16 embeddings kept.
* ``float-hnsw`` / ``float-ivf``: HNSW graph / IVF-Flat lists over the float32 vectors (exact
  scores of the candidates they find); float16 embeddings kept.
* ``float-ivfpq``: IVF + product quantisation, trained once per datastore.
* ``binary-flat`` / ``binary-hnsw`` / ``binary-ivf``: Hamming search over ``ubinary`` sign codes
  (``np.packbits(x > 0)``), 1 bit per dimension; IVF trained once per datastore.

IVF ``nlist`` not given is chosen from the training sample (``families.auto_nlist``) and recorded
in the manifest. Rescoring layers (``datastores.dense.layers``): approximate indexes return
``k × rescore_multiplier`` candidates which are rescored with the float query against
memory-mapped int8 (datastore-wide calibration) or float16 vectors, or, with ``bits > 1``, against
the multi-bit residual sign codes (asymmetric distance). Module map: ``files`` (names, reading),
``families`` (index families), ``layers`` (rescoring layers), ``spec`` (settings, training),
``writing`` (a shard's files), ``reader`` (``DenseShard``: search).
"""

from datastores.dense.families import (
    DENSE_INDEX_TYPES,
    FAMILIES,
    INDEX_ALIASES,
    DenseConfigError,
    Family,
    auto_nlist,
    family,
    selector_params,
)
from datastores.dense.files import (
    CODES_FILE,
    DENSE_FILES,
    EMBEDDINGS_F16_FILE,
    INDEX_FILE,
    RESCORE_INT8_FILE,
    RESCORING_FILES,
    SCALES_FILE,
    TRAINED_FILE,
    open_faiss_index,
    read_dense_index,
    read_embeddings,
)
from datastores.dense.layers import RESCORE_LAYERS, RESCORE_TYPES, stored_vectors
from datastores.dense.reader import DenseShard, gpu_available, search_dense
from datastores.dense.spec import (
    DEFAULT_RESCORE_MULTIPLIER,
    MAX_BITS,
    DenseSpec,
    DenseTraining,
    manifest_dense_index,
    train_dense,
    training_from_manifest,
)
from datastores.dense.writing import build_dense_index, write_dense_files

__all__ = ["CODES_FILE", "DEFAULT_RESCORE_MULTIPLIER", "DENSE_FILES", "DENSE_INDEX_TYPES", "EMBEDDINGS_F16_FILE", "FAMILIES", "INDEX_ALIASES",
           "INDEX_FILE", "MAX_BITS", "RESCORE_INT8_FILE", "RESCORE_LAYERS", "RESCORE_TYPES", "RESCORING_FILES",
           "SCALES_FILE", "TRAINED_FILE", "DenseConfigError", "DenseShard", "DenseSpec", "DenseTraining", "Family",
           "auto_nlist", "build_dense_index", "family", "gpu_available", "manifest_dense_index", "open_faiss_index",
           "read_dense_index", "read_embeddings", "search_dense", "selector_params", "stored_vectors",
           "train_dense", "training_from_manifest", "write_dense_files"]
