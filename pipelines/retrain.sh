#!/usr/bin/env bash
# Retraining: validate the extract and train a challenger, registered in MLflow with its
# metrics, gates, fairness checks and model card. Promotion is left to an analyst
# (`riskstrat promote`), who reads the card first. Usage: pipelines/retrain.sh EXTRACT_FOLDER
# It works in the riskstrat home RISKSTRAT_HOME names (default ./.riskstrat), which
# `riskstrat init` makes once; a command that needs the home refuses when it is missing.
set -euo pipefail
extract="${1:?usage: $0 EXTRACT_FOLDER}"
riskstrat="${RISKSTRAT:-riskstrat}"
"$riskstrat" validate "$extract"
"$riskstrat" train --data "$extract"
"$riskstrat" models
