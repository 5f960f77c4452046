#!/usr/bin/env bash
# Retraining: validate the extract and train a challenger of each model the lists use (the
# 90-day admission model, and the 12-month mortality model that ranks advance care planning),
# registered in MLflow with its metrics, gates, fairness checks and model card. Promotion is
# left to an analyst (`riskstrat promote [--spec death_12m]`), who reads the card first.
# Usage: pipelines/retrain.sh EXTRACT_FOLDER
# It works in the riskstrat home RISKSTRAT_HOME names (default ./.riskstrat), which
# `riskstrat init` makes once; a command that needs the home refuses when it is missing.
set -euo pipefail
extract="${1:?usage: $0 EXTRACT_FOLDER}"
riskstrat="${RISKSTRAT:-riskstrat}"
"$riskstrat" validate "$extract"
"$riskstrat" train --data "$extract"
"$riskstrat" train --data "$extract" --spec death_12m
"$riskstrat" models
"$riskstrat" models --spec death_12m
