"""UCUM normalisation of the measurements the models read, to one unit per LOINC code.

Only codes a model consumes are listed, each with the UCUM unit it wants and the
conversions seen in EHR data (factors from the UCUM definitions and molar masses).
A value in any other unit is left un-normalised, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Convert = Callable[[float], float]


def _times(factor: float) -> Convert:
    return lambda value: value * factor


def _fahrenheit_to_celsius(value: float) -> float:
    return (value - 32.0) * 5.0 / 9.0


@dataclass(frozen=True)
class Canonical:
    unit: str
    #: Other UCUM units (and common non-UCUM spellings) → conversion into ``unit``.
    conversions: dict[str, Convert]


def _cholesterol() -> Canonical:  # mg/dL; 1 mmol/L cholesterol = 38.67 mg/dL
    return Canonical("mg/dL", {"mmol/L": _times(38.67)})


CANONICAL: dict[str, Canonical] = {
    # vital signs
    "8480-6": Canonical("mm[Hg]", {"mmHg": _times(1.0)}),  # systolic BP
    "8462-4": Canonical("mm[Hg]", {"mmHg": _times(1.0)}),  # diastolic BP
    "8867-4": Canonical("/min", {"{beats}/min": _times(1.0), "beats/min": _times(1.0)}),
    "9279-1": Canonical("/min", {"{breaths}/min": _times(1.0), "breaths/min": _times(1.0)}),
    "8310-5": Canonical("Cel", {"[degF]": _fahrenheit_to_celsius, "degF": _fahrenheit_to_celsius}),
    "29463-7": Canonical("kg", {"g": _times(0.001), "[lb_av]": _times(0.45359237)}),
    "8302-2": Canonical("cm", {"m": _times(100.0), "[in_i]": _times(2.54), "mm": _times(0.1)}),
    "39156-5": Canonical("kg/m2", {"kg/m^2": _times(1.0)}),
    "59408-5": Canonical("%", {}),  # SpO2 (pulse oximetry)
    "2708-6": Canonical("%", {}),  # SaO2
    # laboratory
    "2093-3": _cholesterol(),  # total cholesterol
    "2085-9": _cholesterol(),  # HDL cholesterol
    "18262-6": _cholesterol(),  # LDL cholesterol (direct)
    "13457-7": _cholesterol(),  # LDL cholesterol (calculated)
    "2571-8": Canonical("mg/dL", {"mmol/L": _times(88.57)}),  # triglycerides
    "2339-0": Canonical("mg/dL", {"mmol/L": _times(18.016)}),  # glucose
    "2345-7": Canonical("mg/dL", {"mmol/L": _times(18.016)}),  # glucose (serum/plasma)
    "4548-4": Canonical("%", {}),  # HbA1c
    "2160-0": Canonical("mg/dL", {"umol/L": _times(1 / 88.42)}),  # creatinine
    "38483-4": Canonical("mg/dL", {"umol/L": _times(1 / 88.42)}),  # creatinine (blood)
    "33914-3": Canonical(
        "mL/min/{1.73_m2}", {"mL/min/1.73m2": _times(1.0), "mL/min": _times(1.0)}
    ),  # eGFR (MDRD)
    "2823-3": Canonical("mmol/L", {"meq/L": _times(1.0), "mEq/L": _times(1.0)}),  # potassium
    "6298-4": Canonical("mmol/L", {"meq/L": _times(1.0), "mEq/L": _times(1.0)}),  # potassium
    "2951-2": Canonical("mmol/L", {"meq/L": _times(1.0), "mEq/L": _times(1.0)}),  # sodium
    "6299-2": Canonical("mg/dL", {"mmol/L": _times(2.801)}),  # urea nitrogen
    "718-7": Canonical("g/dL", {"g/L": _times(0.1), "mmol/L": _times(1.611)}),  # haemoglobin
    "777-3": Canonical("10*3/uL", {"10*9/L": _times(1.0), "K/uL": _times(1.0)}),  # platelets
    "6301-6": Canonical("{INR}", {"{ratio}": _times(1.0), "1": _times(1.0)}),  # INR
}


def normalise(loinc: str, value: float, unit: str | None) -> tuple[float, str] | None:
    """``(value, unit)`` in the canonical unit for ``loinc``, or None if not convertible."""
    canonical = CANONICAL.get(loinc)
    if canonical is None or unit is None:
        return None
    if unit == canonical.unit:
        return value, canonical.unit
    convert = canonical.conversions.get(unit)
    if convert is None:
        return None
    return convert(value), canonical.unit
