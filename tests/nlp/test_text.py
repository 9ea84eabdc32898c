"""Sections, sentences and de-identification artefacts."""

from __future__ import annotations

from models.nlp.text import clean, sections, split_sentences

REPORT = (
    "INDICATION: XXXX-year-old male, chest pain.\n"
    "COMPARISON: XXXX XXXX.\n"
    "FINDINGS: The heart is normal in size. There is a 1.5 cm nodule in the right upper lobe, "
    "e.g. near the hilum. Dr. XXXX XXXX was notified at XXXX p.m. XXXX/XXXX. No pneumothorax.\n\n"
    "IMPRESSION: 1. Right upper lobe nodule. 2. No acute cardiopulmonary process."
)


def test_sections_are_found_with_their_kinds() -> None:
    kinds = [s.kind for s in sections(REPORT)]
    assert kinds == ["indication", "comparison", "findings", "impression"]


def test_markdown_and_bare_headers_and_headerless_notes() -> None:
    note = "# Chief Complaint\nCough.\n\n# Assessment and Plan\nPneumonia. Start antibiotics."
    assert [s.kind for s in sections(note)] == ["indication", "impression"]
    bare = "Some preamble.\nIMPRESSION\nSmall effusion."
    assert [s.kind for s in sections(bare)] == ["body", "impression"]
    assert [s.kind for s in sections("Lungs are clear.")] == ["body"]


def test_sentences_keep_offsets_abbreviations_decimals_and_list_numbers() -> None:
    sentences = split_sentences(REPORT)
    texts = [s.text for s in sentences]
    assert "There is a 1.5 cm nodule in the right upper lobe, e.g. near the hilum." in texts
    assert "1. Right upper lobe nodule." in texts
    assert "2. No acute cardiopulmonary process." in texts
    for sentence in sentences:
        assert REPORT[sentence.start : sentence.end] == sentence.text
    # A sentence that is nothing but de-identification placeholders is dropped.
    assert not any(s.text.startswith("XXXX/XXXX") for s in sentences)


def test_deidentification_runs_are_removed_from_the_clean_form_only() -> None:
    sentence = next(s for s in split_sentences(REPORT) if s.text.startswith("Dr."))
    assert "XXXX" in sentence.text
    assert "XXXX" not in sentence.clean
    assert clean("XXXX-year-old male") == "year-old male"
    assert clean("left cardiophrenic XXXX. Next") == "left cardiophrenic. Next"


def test_line_breaks_end_sentences() -> None:
    texts = [s.text for s in split_sentences("Lungs clear\nNo effusion\n\nHeart normal")]
    assert texts == ["Lungs clear", "No effusion", "Heart normal"]
