"""Turn raw corpora into chunks with exact spans, embed them and write datastores."""

from indexers.build import BuildReport, build_datastore
from indexers.build_input import BuildInput
from indexers.chunkers import make_chunker
from indexers.config import BuildConfig, ConfigError, load_config
from indexers.embedding import Embedder, load_embedder
from indexers.readers import ReaderOptions, ReadReport, iter_documents
from indexers.tokenizers import load_tokenizer

__all__ = ["BuildConfig", "BuildInput", "BuildReport", "ConfigError", "ReadReport", "ReaderOptions",
           "Embedder", "build_datastore", "iter_documents", "load_config",
           "load_embedder", "load_tokenizer", "make_chunker"]
