"""ConText negation, uncertainty and temporality: the issue's four phrases and many more."""

from __future__ import annotations

import pytest

from models.nlp.context import find_triggers
from models.nlp.rules import mentions, read_rules


def assertion(text: str, label: str) -> str | None:
    verdict = read_rules(text).get(label)
    return verdict.assertion if verdict else None


# --------------------------------------------------------------------------- the four
def test_no_pneumothorax_is_absent() -> None:
    assert assertion("No pneumothorax.", "pneumothorax") == "absent"


def test_cannot_exclude_pneumonia_is_uncertain_not_negated() -> None:
    assert assertion("Cannot exclude pneumonia.", "consolidation_pneumonia") == "uncertain"


def test_effusion_has_resolved_is_absent_as_resolved() -> None:
    verdict = read_rules("The left effusion has resolved.")["pleural_effusion"]
    assert verdict.assertion == "absent"
    assert verdict.mention.context.resolved


def test_no_change_in_small_left_effusion_is_present() -> None:
    """'No change in' is a pseudo-trigger: the effusion is still there."""
    assert assertion("No change in small left effusion.", "pleural_effusion") == "present"


# --------------------------------------------------------------------------- many more
CASES = [
    # negation, forward and backward, and lists under one trigger
    ("There is no pleural effusion.", "pleural_effusion", "absent"),
    ("Without evidence of pneumothorax.", "pneumothorax", "absent"),
    ("Negative for pneumothorax.", "pneumothorax", "absent"),
    ("No evidence of focal consolidation.", "consolidation_pneumonia", "absent"),
    ("Pneumothorax is not seen.", "pneumothorax", "absent"),
    ("Pneumothorax has been excluded.", "pneumothorax", "absent"),
    ("No focal airspace disease, pleural effusion, or pneumothorax.", "pneumothorax", "absent"),
    ("No focal airspace disease, pleural effusion, or pneumothorax.", "pleural_effusion", "absent"),
    ("The cardiac silhouette is not enlarged.", "cardiomegaly", "absent"),
    ("No acute fracture.", "fracture", "absent"),
    ("No suspicious pulmonary nodules or masses.", "lung_nodule_mass", "absent"),
    ("Lungs are free of consolidation.", "consolidation_pneumonia", "absent"),
    ("No definite pleural effusion seen.", "pleural_effusion", "absent"),
    # resolved
    ("Interval resolution of the right pneumothorax.", "pneumothorax", "absent"),
    (
        "Previously seen left lower lobe consolidation has cleared.",
        "consolidation_pneumonia",
        "absent",
    ),
    ("The pneumothorax is no longer seen.", "pneumothorax", "absent"),
    # partly resolved: still there
    ("The right effusion has nearly resolved.", "pleural_effusion", "present"),
    # uncertainty, forward and backward
    ("Possible small right apical pneumothorax.", "pneumothorax", "uncertain"),
    ("Pneumonia cannot be excluded.", "consolidation_pneumonia", "uncertain"),
    ("A small effusion is not excluded.", "pleural_effusion", "uncertain"),
    ("Left basilar opacity may represent atelectasis.", "atelectasis", "uncertain"),
    ("Findings suspicious for pneumonia.", "consolidation_pneumonia", "uncertain"),
    ("Findings concerning for pulmonary edema.", "pulmonary_edema", "uncertain"),
    ("Atelectasis versus pneumonia.", "consolidation_pneumonia", "uncertain"),
    ("Questionable nodule in the right upper lobe.", "lung_nodule_mass", "uncertain"),
    ("Right pneumothorax is suspected.", "pneumothorax", "uncertain"),
    ("Probable mild pulmonary edema.", "pulmonary_edema", "uncertain"),
    ("Difficult to exclude a small left effusion.", "pleural_effusion", "uncertain"),
    # pseudo-triggers
    ("No significant change in the right upper lobe nodule.", "lung_nodule_mass", "present"),
    ("No interval change in mild cardiomegaly.", "cardiomegaly", "present"),
    ("Not only atelectasis but also effusion.", "atelectasis", "present"),
    # termination: the scope stops at "but", "however", ";", "there is", ", with"
    ("No consolidation, but there is bibasilar atelectasis.", "atelectasis", "present"),
    ("No pneumothorax; small left effusion.", "pleural_effusion", "present"),
    ("No pneumothorax, however a small left effusion persists.", "pleural_effusion", "present"),
    ("No effusion, there is mild cardiomegaly.", "cardiomegaly", "present"),
    ("Lungs without consolidation, with mild left basilar atelectasis.", "atelectasis", "present"),
    # another trigger category ends a negation's scope
    ("No effusion; possible pneumothorax.", "pneumothorax", "uncertain"),
    # plain present statements
    ("Small right pneumothorax.", "pneumothorax", "present"),
    ("Heart size is mildly enlarged.", "cardiomegaly", "present"),
    ("Stable cardiomegaly.", "cardiomegaly", "present"),
    ("There is a 1.5 cm nodule in the right upper lobe.", "lung_nodule_mass", "present"),
    ("Old healed left rib fractures.", "fracture", "present"),
    ("Bibasilar atelectasis.", "atelectasis", "present"),
    ("Moderate pulmonary vascular congestion.", "pulmonary_edema", "present"),
    ("Right lower lobe pneumonia.", "consolidation_pneumonia", "present"),
    # the no-acute-finding phrase asserts itself (its "no" is part of the finding)
    ("No acute cardiopulmonary abnormality.", "no_acute_finding", "present"),
    ("No acute cardiopulmonary process.", "no_acute_finding", "present"),
    # scope is bounded: a negation far away does not reach
    (
        "No effusion is seen on the frontal view and on the lateral view the heart is "
        "normal in size and the lungs show a right pneumothorax.",
        "pneumothorax",
        "present",
    ),
]


@pytest.mark.parametrize(("text", "label", "expected"), CASES)
def test_assertion(text: str, label: str, expected: str) -> None:
    assert assertion(text, label) == expected, read_rules(text)


def test_no_acute_finding_is_contradicted_by_an_affirmed_acute_finding() -> None:
    verdicts = read_rules("Small right pneumothorax. No acute cardiopulmonary process.")
    assert verdicts["pneumothorax"].assertion == "present"
    assert verdicts["no_acute_finding"].assertion == "absent"


@pytest.mark.parametrize(
    "text",
    ["History of pneumothorax.", "Family history of lung cancer mass.", "H/o rib fracture."],
)
def test_historical_and_other_people_are_not_current_findings(text: str) -> None:
    assert read_rules(text) == {}
    assert mentions(text) and not any(m.current for m in mentions(text))


def test_indication_section_is_not_a_finding() -> None:
    text = "INDICATION: Rule out pneumonia, pneumothorax.\nFINDINGS: Lungs are clear."
    assert read_rules(text) == {}


def test_impression_wins_a_tie_and_present_beats_absent() -> None:
    text = "FINDINGS: No effusion on the left. Small right effusion.\nIMPRESSION: Small effusion."
    verdict = read_rules(text)["pleural_effusion"]
    assert verdict.assertion == "present"
    assert verdict.mention.sentence.section == "impression"


def test_the_longest_trigger_wins_and_pseudo_triggers_hide_what_they_contain() -> None:
    kinds = [(t.category, t.direction) for t in find_triggers("pneumonia cannot be excluded")]
    assert kinds == [("uncertain", "backward")]
    assert find_triggers("no change in the small effusion") == []


def test_deidentification_runs_do_not_break_matching() -> None:
    text = "FINDINGS: XXXX XXXX no XXXX pneumothorax. Dr. XXXX was notified at XXXX p.m."
    assert assertion(text, "pneumothorax") == "absent"
