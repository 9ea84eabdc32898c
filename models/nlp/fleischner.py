"""Follow-up of an incidental lung nodule: the Fleischner Society 2017 guideline.

MacMahon H, et al. Guidelines for Management of Incidental Pulmonary Nodules Detected on
CT Images: From the Fleischner Society 2017. Radiology 2017;284:228-243.

Solid nodules (this module assumes solid: a report rarely says "subsolid" next to a size):

============ ======================================== ==========================================
size         single                                    multiple
============ ======================================== ==========================================
< 6 mm       low risk: no routine follow-up;          low risk: no routine follow-up;
             high risk: optional CT at 12 months      high risk: optional CT at 12 months
6-8 mm       CT at 6-12 months, then (consider)       CT at 3-6 months, then (consider)
             CT at 18-24 months                       CT at 18-24 months
> 8 mm       consider CT at 3 months, PET/CT or       CT at 3-6 months, then consider CT at
             tissue sampling                          18-24 months
============ ======================================== ==========================================

Size is the average of the long- and short-axis diameters, rounded to the nearest mm; with
several nodules the largest decides. The guideline applies to incidental nodules in adults
(35 years and over) without known cancer or immunosuppression, not to lung cancer
screening; the patient's risk (smoking, exposure, family history …) is not known to this
service, so both risk levels are stated where they differ. Calcified nodules are benign
(no follow-up); a lesion over 30 mm is a *mass*, outside the guideline (prompt work-up).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_AGE = 35
MASS_MM = 30.0
SOURCE = "Fleischner Society 2017 (MacMahon et al., Radiology 2017;284:228-243)"
SOURCE_URL = "https://doi.org/10.1148/radiol.2017161659"
ASSUMPTIONS = (
    "solid nodule (the report does not say subsolid)",
    "incidental finding in an adult of 35 or over, not lung cancer screening",
    "no known cancer or immunosuppression",
    "risk (smoking, exposure, family history) unknown: both risk levels are given",
)

_NUMBER = r"(\d{1,3}(?:\.\d{1,2})?)"
_UNIT = r"(mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?)\b"
_DIMENSIONS = re.compile(
    rf"{_NUMBER}\s*(?:{_UNIT})?\s*(?:x|\u00d7|by)\s*{_NUMBER}(?:\s*(?:x|\u00d7|by)\s*{_NUMBER})?\s*{_UNIT}",
    re.IGNORECASE,
)
_SINGLE = re.compile(rf"{_NUMBER}\s*-?\s*{_UNIT}", re.IGNORECASE)
_MULTIPLE = re.compile(
    r"\b(?:nodules|masses|multiple|several|numerous|bilateral|scattered|few|innumerable)\b",
    re.IGNORECASE,
)
_CALCIFIED = re.compile(r"(?<!non)(?<!non-)\bcalcified\b|\bcalcification", re.IGNORECASE)


def _to_mm(value: str, unit: str) -> float:
    return float(value) * (10.0 if unit.lower().startswith("c") else 1.0)


def size_mm(sentence: str) -> float | None:
    """The nodule size a sentence states (mm, average of long and short axis), if any.

    With several sizes the largest counts (the most suspicious nodule decides).
    """
    sizes: list[float] = []
    taken: list[tuple[int, int]] = []
    for match in _DIMENSIONS.finditer(sentence):
        unit = match.group(5)
        dims = [_to_mm(v, unit) for v in (match.group(1), match.group(3), match.group(4)) if v]
        long_axis, short_axis = max(dims), min(dims[:2])
        sizes.append(round((long_axis + short_axis) / 2))
        taken.append(match.span())
    for match in _SINGLE.finditer(sentence):
        if any(s <= match.start() < e for s, e in taken):
            continue
        sizes.append(round(_to_mm(match.group(1), match.group(2))))
    return max(sizes) if sizes else None


@dataclass(frozen=True)
class FollowUp:
    """What the guideline says for one nodule finding."""

    applies: bool
    #: One line for the card ("6-8 mm single solid nodule: CT at 6-12 months …").
    summary: str
    #: The CT to suggest, in months from the report: (earliest, latest); None: none.
    ct_months: tuple[int, int] | None
    #: Only an option (e.g. high-risk patients with a nodule under 6 mm).
    optional: bool = False
    size_mm: float | None = None
    multiple: bool = False
    category: str | None = None
    #: Calcified: benign, nothing to follow up.
    benign: bool = False


def follow_up(sentence: str, age_years: int | None) -> FollowUp:
    """The Fleischner 2017 follow-up for the nodule described in ``sentence``."""
    size = size_mm(sentence)
    multiple = bool(_MULTIPLE.search(sentence))
    kind = "multiple solid nodules" if multiple else "single solid nodule"
    if _CALCIFIED.search(sentence):
        return FollowUp(
            False, "Calcified nodule: benign, no follow-up needed.", None, size_mm=size, benign=True
        )
    if age_years is not None and age_years < MIN_AGE:
        return FollowUp(
            False,
            f"Patient under {MIN_AGE}: the Fleischner guideline does not apply; "
            "manage case by case.",
            None,
            False,
            size,
            multiple,
        )
    if size is None:
        return FollowUp(
            False,
            "Size not stated in the report: a Fleischner category cannot be assigned; "
            "review the images or ask radiology for the size.",
            None,
            multiple=multiple,
        )
    if size > MASS_MM:
        return FollowUp(
            False,
            f"{size:g} mm: a mass (over 30 mm), outside the Fleischner guideline; "
            "prompt diagnostic work-up (CT chest, specialist referral).",
            (0, 1),
            False,
            size,
            multiple,
            "mass",
        )
    if size < 6:
        return FollowUp(
            True,
            f"{size:g} mm {kind} (under 6 mm): no routine follow-up if low risk; "
            "optional CT at 12 months if high risk.",
            (12, 12),
            True,
            size,
            multiple,
            "<6 mm",
        )
    if size <= 8:
        if multiple:
            text = "CT at 3-6 months, then CT at 18-24 months (consider, if low risk)."
            months = (3, 6)
        else:
            text = "CT at 6-12 months, then CT at 18-24 months (consider, if low risk)."
            months = (6, 12)
        return FollowUp(True, f"{size:g} mm {kind} (6-8 mm): {text}", months, False, size,
                        multiple, "6-8 mm")  # fmt: skip
    if multiple:
        text = "CT at 3-6 months, then consider CT at 18-24 months."
        months = (3, 6)
    else:
        text = "consider CT at 3 months, PET/CT, or tissue sampling."
        months = (3, 3)
    return FollowUp(True, f"{size:g} mm {kind} (over 8 mm): {text}", months, False, size,
                    multiple, ">8 mm")  # fmt: skip
