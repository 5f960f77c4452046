#!/usr/bin/env bash
# Outcomes of a month's lists, once its 90-day window has passed: expected against observed
# admissions per cohort. Usage: pipelines/outcomes.sh EXTRACT_FOLDER YYYY-MM
# It works in the riskstrat home RISKSTRAT_HOME names (default ./.riskstrat), which
# `riskstrat init` makes once; a command that needs the home refuses when it is missing.
set -euo pipefail
extract="${1:?usage: $0 EXTRACT_FOLDER YYYY-MM}"
month="${2:?usage: $0 EXTRACT_FOLDER YYYY-MM}"
riskstrat="${RISKSTRAT:-riskstrat}"
"$riskstrat" validate "$extract"
"$riskstrat" outcomes --data "$extract" --month "$month"
