#!/usr/bin/env bash
# The monthly run: validate the new extract, then score the latest complete month with the
# champion and publish its cohorts. Usage: pipelines/monthly.sh EXTRACT_FOLDER
# It works in the riskstrat home RISKSTRAT_HOME names (default ./.riskstrat), which
# `riskstrat init` makes once; a command that needs the home refuses when it is missing.
set -euo pipefail
extract="${1:?usage: $0 EXTRACT_FOLDER}"
riskstrat="${RISKSTRAT:-riskstrat}"
"$riskstrat" validate "$extract"
"$riskstrat" score --data "$extract" --month latest
