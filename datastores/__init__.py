"""On-disk datastores: manifest, shards, chunk tables, dense and BM25 indexes, search."""

from datastores.bm25 import Bm25Params
from datastores.datastore import Datastore
from datastores.errors import DatastoreError, IncompleteBuildError
from datastores.manifest import Manifest, read_manifest
from datastores.records import Chunk, Document, Hit
from datastores.retrieval import SearchOptions, SearchRequest, Searcher
from datastores.writer import DatastoreWriter

__all__ = ["Bm25Params", "Chunk", "Datastore", "DatastoreError", "DatastoreWriter", "Document", "Hit",
           "IncompleteBuildError", "Manifest", "SearchOptions", "SearchRequest", "Searcher", "read_manifest"]
