"""`make demo-fhir`: a FHIR R4 server with the 300 shared Synthea patients, for trying the
self-fetch path (a hook call with ``fhirServer`` and no prefetch) against `make serve`.

It is the adapter tests' server (sekmet-fhir on 127.0.0.1, bearer-token auth, a private
copy of the cached database), kept running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import SYNTHEA  # noqa: E402
from tests.support.fhir_server import (  # noqa: E402
    fhir_authorization,
    loaded_database,
    running_copy,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    print("loading the Synthea bundles (about 2 minutes the first time) …", flush=True)
    database = loaded_database(SYNTHEA)
    with running_copy(database, port=args.port) as server:
        authorization = fhir_authorization(server.token, subject="demo", expires_in=3600)
        print(f"FHIR server: {server.base_url}  ({len(database.patient_ids)} patients)")
        print(f"first patient id: {database.patient_ids[0]}")
        print("add to a hook request (and drop its prefetch) to make the service fetch:")
        print(json.dumps({"fhirServer": server.base_url, "fhirAuthorization": authorization}))
        print("Ctrl-C stops it.", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
