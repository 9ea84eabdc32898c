"""Build a :class:`DrugIdentity` by hand for rule tests (classes from the real table)."""

from __future__ import annotations

from models.drug.normalise import DrugIdentity, ingredient_classes


def drug(label: str, *ingredients: str, identified: bool = True) -> DrugIdentity:
    classes = frozenset().union(*(ingredient_classes(i) for i in ingredients))
    return DrugIdentity(
        label=label,
        ingredients=ingredients,
        classes=classes,
        atc=(),
        rxcui=None,
        strengths_mg={},
        dose_form="tablet",
        identified=identified,
    )
