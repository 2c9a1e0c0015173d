"""terarag: retrieval-augmented generation over sharded datastores.

    from rag import Datastore
    ds = Datastore.open("ds/")
    hits = ds.search("who signed the treaty", k=5, mode="dense")
"""

from datastores import Chunk, DatastoreError, Document, Hit
from rag.datastore import Datastore
from rag.pipeline import Answer, Pipeline

__all__ = ["Answer", "Chunk", "Datastore", "DatastoreError", "Document", "Hit", "Pipeline"]
__version__ = "0.1.0"
