"""Feeding token ids straight to a sentence-transformers model on PyTorch.

``SentenceTransformer.encode`` tokenizes again what the embedder has already tokenized to sort
texts by length, copies every batch to the device synchronously and brings every batch's vectors
back at once, which makes a GPU wait for the CPU after each batch. ``TorchFeeder`` runs the
model on ids it is handed instead:

- the ids are padded into host buffers; on CUDA those buffers are pinned and used in turn
  (two of them), so a batch's copy to the GPU is asynchronous and overlaps the previous batch's
  compute;
- outputs stay on the device as float32 unit vectors and ``gather`` copies them back once, at
  the end of an ``encode`` call;
- ``token_type_ids`` (all zero for single texts) are made on the device.

It is used only when the model's fast tokenizer gives exactly the ids sentence-transformers
would (``indexers.embedding.backend.check_fast_tokenizer``); otherwise the embedder falls back to
``SentenceTransformer.encode``. On CPU the same code runs without pinning.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def pad_into(ids: Sequence[np.ndarray], pad_id: int, input_ids: np.ndarray, mask: np.ndarray) -> None:
    """Right-pad ``ids`` into the preallocated ``input_ids`` and ``attention_mask`` arrays."""
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    np.less(np.arange(input_ids.shape[1]), lengths[:, None], out=mask, casting="unsafe")
    input_ids.fill(pad_id)
    input_ids[mask.astype(bool)] = np.concatenate(ids) if len(ids) else []


class _HostSlot:
    """A pair of pinned int64 host buffers and the CUDA event of their last copy to the device."""

    def __init__(self) -> None:
        self.ids: Any = None
        self.mask: Any = None
        self.event: Any = None

    def views(self, rows: int, width: int) -> tuple[Any, Any]:
        import torch

        if self.event is not None:
            self.event.synchronize()  # the previous copy out of these buffers has finished
        size = rows * width
        if self.ids is None or self.ids.numel() < size:
            capacity = max(size, 2 * (0 if self.ids is None else self.ids.numel()))
            self.ids = torch.empty(capacity, dtype=torch.int64, pin_memory=True)
            self.mask = torch.empty(capacity, dtype=torch.int64, pin_memory=True)
        return self.ids[:size].view(rows, width), self.mask[:size].view(rows, width)


class TorchFeeder:
    """Runs a sentence-transformers ``model`` on padded token ids; returns unit vectors on its device.

    ``input_names`` are the tokenizer outputs the model takes (``input_ids``, ``attention_mask``
    and possibly ``token_type_ids``); ``pad_id`` is the tokenizer's padding id.
    """

    def __init__(self, model: Any, device: str, input_names: Sequence[str], pad_id: int):
        self.model = model
        self.device = device
        self.input_names = tuple(input_names)
        self.pad_id = int(pad_id)
        self.pinned = device.startswith("cuda")
        self._slots = [_HostSlot(), _HostSlot()]
        self._turn = 0

    def _host(self, rows: int, width: int) -> tuple[Any, Any]:
        import torch

        if not self.pinned:
            return (torch.empty((rows, width), dtype=torch.int64), torch.empty((rows, width), dtype=torch.int64))
        slot = self._slots[self._turn]
        self._turn ^= 1
        return slot.views(rows, width)

    def run(self, ids: Sequence[np.ndarray], width: int | None = None) -> Any:
        """Float32 unit vectors (a tensor on the model's device) of one batch of token id rows,
        padded to ``width`` (default: the longest row)."""
        import torch

        rows, width = len(ids), max(1, width or max(len(row) for row in ids))
        host_ids, host_mask = self._host(rows, width)
        pad_into(ids, self.pad_id, host_ids.numpy(), host_mask.numpy())
        features = {"input_ids": host_ids.to(self.device, non_blocking=True),
                    "attention_mask": host_mask.to(self.device, non_blocking=True)}
        if self.pinned:
            slot = self._slots[self._turn ^ 1]
            slot.event = torch.cuda.Event()
            slot.event.record()
        if "token_type_ids" in self.input_names:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"]
            return torch.nn.functional.normalize(out.float(), p=2.0, dim=-1)

    def gather(self, out: np.ndarray, pending: Sequence[tuple[np.ndarray, Any]]) -> None:
        """Copy the pending ``(row indices, device vectors)`` into ``out`` with one transfer."""
        import torch

        if not pending:
            return
        vectors = torch.cat([v for _, v in pending]).cpu().numpy()
        out[np.concatenate([idx for idx, _ in pending])] = vectors
