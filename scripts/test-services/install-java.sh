#!/usr/bin/env bash
# A Java runtime for Spark (pyspark's JVM; the population tests start a standalone cluster).
# Spark 4 needs Java 17 or later. Idempotent: nothing happens when one is on PATH.
set -euo pipefail

version() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1; }

if command -v java >/dev/null && [[ "$(version)" -ge 17 ]]; then
    exit 0
fi
echo "installing a Java 17 runtime for Spark (Debian openjdk-17-jre-headless)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
java -version
