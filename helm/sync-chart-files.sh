#!/usr/bin/env sh
# Copy the alert rules and Grafana dashboards into the chart, which can only read
# files inside itself (.Files.Get). dashboards/ is the source; run this after changing
# it. tests/deploy/test_chart_files.py fails while the copies differ.
set -eu
cd "$(dirname "$0")/.."
dest=helm/gateway/files
mkdir -p "$dest/dashboards"
cp dashboards/alerts.yaml "$dest/alerts.yaml"
rm -f "$dest"/dashboards/*.json
cp dashboards/*.json "$dest/dashboards/"
echo "copied dashboards/alerts.yaml and dashboards/*.json into $dest"
