"""The reference: a bare Flask handler answering the same card, under the same gunicorn settings.

No auth, no validation, no FHIR parsing, no audit: the ceiling Flask + gunicorn reach on
this machine, so our figures can be read as a ratio to it.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)

CARD = {
    "uuid": "5b2f4c2e-6f0e-4d0b-9a53-0f1f4b8d2d11",
    "summary": "Female, 72 y: 2 active problems, 0 active medications",
    "detail": "**Active problems** (2):\n- Anemia (disorder)\n- Prediabetes\n\n"
    "**Active medications**: none recorded",
    "indicator": "info",
    "source": {"label": "Wardround patient summary"},
}


@app.post("/cds-services/<service_id>")
def invoke(service_id: str):  # type: ignore[no-untyped-def]
    request.get_data()  # read the body, as the real service must
    return jsonify({"cards": [CARD]})
