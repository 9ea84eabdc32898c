"""The review page's filter (a GET form, validated with WTForms) and the SQL it stands for.

Dates are calendar days in UTC, both ends included. ``outcome`` is what clinicians did
with the call's cards: ``accepted`` / ``overridden`` (some card got that feedback) or
``none`` (the call returned cards and none got feedback).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask_wtf import FlaskForm
from sqlalchemy import ColumnElement
from werkzeug.datastructures import MultiDict
from wtforms import DateField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, NumberRange, Optional, Regexp, ValidationError

from cds.audit import read
from cds.audit.tables import Card, Invocation

INDICATORS = ("info", "warning", "critical")
OUTCOMES = {"accepted": "accepted", "overridden": "overridden", "none": "no feedback"}
PAGE_SIZES = (25, 50, 100, 200)
_ID = r"^[A-Za-z0-9\-._:/]{1,200}$"


class FilterForm(FlaskForm):
    """Search form of the review page (GET; no CSRF token: it changes nothing)."""

    class Meta:
        csrf = False

    date_from = DateField("From", validators=[Optional()])
    date_to = DateField("To", validators=[Optional()])
    patient = StringField(
        "Patient id", validators=[Optional(), Length(max=200), Regexp(_ID, message="not an id")]
    )
    service = SelectField("Service", validators=[Optional()], validate_choice=True)
    indicator = SelectField(
        "Indicator",
        choices=[SelectChoice("", "any"), *(SelectChoice(i, i) for i in INDICATORS)],
        validators=[Optional()],
    )
    outcome = SelectField(
        "Feedback",
        choices=[SelectChoice("", "any"), *(SelectChoice(k, v) for k, v in OUTCOMES.items())],
        validators=[Optional()],
    )
    model = StringField(
        "Model id", validators=[Optional(), Length(max=128), Regexp(_ID, message="not an id")]
    )
    size = SelectField(
        "Rows",
        choices=[SelectChoice(str(n), str(n)) for n in PAGE_SIZES],
        default="50",
        validators=[Optional()],
    )
    before = IntegerField("before", validators=[Optional(), NumberRange(min=1)])

    def validate_date_to(self, field: DateField) -> None:
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("must not be before From")


def filter_form(args: MultiDict[str, str], services: list[str]) -> FilterForm:
    form = FilterForm(formdata=args)
    form.service.choices = [SelectChoice("", "any"), *(SelectChoice(s, s) for s in services)]
    return form


@dataclass(frozen=True)
class CallFilter:
    date_from: date | None = None
    date_to: date | None = None
    patient: str | None = None
    service: str | None = None
    indicator: str | None = None
    outcome: str | None = None
    model: str | None = None

    @classmethod
    def from_form(cls, form: FilterForm) -> CallFilter:
        return cls(
            date_from=form.date_from.data,
            date_to=form.date_to.data,
            patient=(form.patient.data or "").strip() or None,
            service=form.service.data or None,
            indicator=form.indicator.data or None,
            outcome=form.outcome.data or None,
            model=(form.model.data or "").strip() or None,
        )

    def conditions(self, dialect: str) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.date_from:
            where.append(Invocation.received_at >= _start(self.date_from))
        if self.date_to:
            where.append(Invocation.received_at < _start(self.date_to + timedelta(days=1)))
        if self.patient:
            where.append(Invocation.patient_id == self.patient)
        if self.service:
            where.append(Invocation.service_id == self.service)
        if self.indicator:
            where.append(read.has_card(Card.indicator == self.indicator))
        if self.outcome:
            where.append(read.feedback_outcome_is(self.outcome))
        if self.model:
            where.append(read.model_used(dialect, self.model))
        return where

    def as_query(self) -> dict[str, list[str]]:
        """The filter as URL parameters (links, exports) and as recorded in the access log."""
        values: dict[str, Any] = {
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
            "patient": self.patient,
            "service": self.service,
            "indicator": self.indicator,
            "outcome": self.outcome,
            "model": self.model,
        }
        return {k: [v] for k, v in values.items() if v}


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
