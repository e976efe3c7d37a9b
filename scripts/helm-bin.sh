#!/usr/bin/env bash
# helm, built from its Go module (helm.sh/helm/v4 at the version tests/helm/go.mod names) into
# target/tools/bin/helm, for the chart's tests and the control-plane tier. Nothing is downloaded
# but Go modules (the module proxy). Without Go it says so and builds nothing; HELM=PATH in the
# Makefile uses a helm of your own instead.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/tools/bin
mod=tests/helm
if ! command -v go >/dev/null; then
  echo "helm-bin: Go is not installed; helm is not built"
  exit 0
fi
fresh=1
for src in "$mod/go.mod" "$mod/go.sum" "$mod/tools.go"; do
  [ "$out/helm" -nt "$src" ] || fresh=0
done
if [ "$fresh" = 1 ]; then
  exit 0
fi
version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v4" { print $3 }' "$mod/go.mod")
echo "helm-bin: building helm $version into $out"
mkdir -p "$out"
(
  cd "$mod"
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
    -o "../../$out/helm" helm.sh/helm/v4/cmd/helm
)
"$out/helm" version --short
