"""Fleischner 2017 follow-up of lung nodules: size parsing and categories."""

from __future__ import annotations

import pytest

from models.nlp.fleischner import follow_up, size_mm


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("There is a 7 mm nodule in the right upper lobe.", 7),
        ("A 1.2 cm nodule.", 12),
        ("Nodule measuring 12 x 8 mm.", 10),  # mean of long and short axis
        ("Nodule measuring 1.2 x 0.6 x 0.9 cm.", 9),
        ("A 5-mm nodule and a 9 mm nodule.", 9),  # the largest decides
        ("Nodule of 4 millimeters.", 4),
        ("A small nodule.", None),
    ],
)
def test_size(sentence: str, expected: float | None) -> None:
    assert size_mm(sentence) == expected


def test_categories_single_and_multiple() -> None:
    small = follow_up("A 4 mm nodule in the left lower lobe.", 60)
    assert small.applies and small.optional and small.ct_months == (12, 12)
    middle = follow_up("A 7 mm nodule in the left lower lobe.", 60)
    assert middle.category == "6-8 mm" and middle.ct_months == (6, 12) and not middle.optional
    middle_multiple = follow_up("Several 7 mm nodules in both lungs.", 60)
    assert middle_multiple.multiple and middle_multiple.ct_months == (3, 6)
    large = follow_up("A 1.2 cm nodule in the right upper lobe.", 60)
    assert large.category == ">8 mm" and large.ct_months == (3, 3)
    large_multiple = follow_up("Multiple nodules, the largest 15 mm.", 60)
    assert large_multiple.ct_months == (3, 6)


def test_where_the_guideline_does_not_apply() -> None:
    assert not follow_up("A 7 mm calcified nodule.", 60).applies
    assert follow_up("A 7 mm calcified nodule.", 60).benign
    assert follow_up("A 7 mm noncalcified nodule.", 60).applies
    young = follow_up("A 7 mm nodule.", 30)
    assert not young.applies and young.ct_months is None
    unsized = follow_up("A nodule in the right upper lobe.", 60)
    assert not unsized.applies and "Size not stated" in unsized.summary
    mass = follow_up("A 4.5 cm mass in the left upper lobe.", 60)
    assert mass.category == "mass" and not mass.applies and mass.ct_months == (0, 1)
