#!/usr/bin/env bash
# `make e2e`: the end-to-end suite on a kind cluster.
#
#   scripts/e2e.sh            create the cluster podtailor-e2e, build and load the image,
#                             install with the certs overlay, run tests/e2e.rs, delete the cluster
#   KEEP=1 scripts/e2e.sh     the same, and keep the cluster (a later run reuses it)
#
# Needs docker (with a running engine), kind and kubectl. Exit codes: 0 the suite passed,
# 1 it failed or could not run (the reason is the last line).
set -euo pipefail

readonly cluster=podtailor-e2e
readonly context=kind-$cluster
readonly image=${IMAGE:-podtailor:0.1.0}
readonly label=podtailor.dev/e2e=true
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly root
cd "$root"

say() { echo "e2e: $*" >&2; }

missing=()
for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
    say "not run: ${missing[*]} not found (the suite needs docker, kind and kubectl)"
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    say "not run: docker is installed but no Docker engine answers ('docker info' fails)"
    exit 1
fi

k() { kubectl --context "$context" "$@"; }

cleanup() {
    local status=$?
    if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
        k delete namespace -l "$label" --wait=false >/dev/null 2>&1 || true
        if [[ ${KEEP:-0} == 1 ]]; then
            say "keeping the cluster (KEEP=1): kubectl --context $context ..."
        else
            kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
        fi
    fi
    if ((status == 0)); then say "passed"; else say "FAILED (exit $status)"; fi
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    say "reusing the cluster $cluster"
else
    say "creating the cluster $cluster"
    kind create cluster --name "$cluster" --config tests/e2e/kind.yaml --wait 180s
fi

say "building the image $image"
docker build --tag "$image" .
kind load docker-image "$image" --name "$cluster"

say "installing (certs overlay)"
scripts/certs.sh
k apply -k certs
k wait --for condition=established --timeout 60s crd/podoverrides.podtailor.dev
# a reused cluster runs the previous image under the same tag: restart onto the new one
k -n podtailor-system rollout restart deployment/podtailor
k -n podtailor-system rollout status deployment/podtailor --timeout 180s
k delete namespace -l "$label" --wait=true --timeout 120s >/dev/null 2>&1 || true

say "running the scenarios"
PODTAILOR_E2E=1 cargo test --locked --test e2e -- --ignored --test-threads=1
