#!/usr/bin/env bash
# The control-plane binaries of the envtest tier, built from Go modules into target/envtest/bin:
# kube-apiserver and kubectl from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, at the
# versions tests/envtest/go.mod names, and policycost (tests/envtest/policycost: the CEL cost of
# `podtailor policy`'s objects, with the API server's own evaluator). Nothing is downloaded but
# Go modules (the module proxy). With KUBEBUILDER_ASSETS set (the envtest convention) those
# binaries are used and only policycost is built. Without Go it says so and builds nothing;
# the tier then skips (or fails where PODTAILOR_ENVTEST=require).
#
#   scripts/envtest-bin.sh          the control plane: kube-apiserver, kubectl, etcd
#   scripts/envtest-bin.sh --node   also a node's: kubelet, kube-scheduler,
#                                   kube-controller-manager, kube-proxy (make e2e-local)
set -euo pipefail
bins=(kube-apiserver kubectl etcd policycost)
pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd ./policycost)
case "${1:-}" in
  "") ;;
  --node)
    bins+=(kubelet kube-scheduler kube-controller-manager kube-proxy)
    pkgs+=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler
      k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-proxy)
    ;;
  *) echo "usage: ${0##*/} [--node]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
out=target/envtest/bin
mod=tests/envtest
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -z "${1:-}" ]; then
  echo "envtest-bin: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS; only policycost is built"
  bins=(policycost)
  pkgs=(./policycost)
fi
if ! command -v go >/dev/null; then
  echo "envtest-bin: Go is not installed; the control-plane binaries are not built"
  exit 0
fi
fresh=1
for bin in "${bins[@]}"; do
  for src in "$mod/go.mod" "$mod/go.sum" "$mod/etcd/main.go" "$mod/policycost/main.go" "$mod/tools.go"; do
    [ "$out/$bin" -nt "$src" ] || fresh=0
  done
done
if [ "$fresh" = 1 ]; then
  exit 0
fi
version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$mod/go.mod")
minor=${version#v1.}
minor=${minor%%.*}
echo "envtest-bin: building ${bins[*]} ($version; etcd as go.mod names it) into $out (the first build takes minutes)"
mkdir -p "$out"
(
  cd "$mod"
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    -o "../../$out/" "${pkgs[@]}"
)
# its first line (sed reads it all: `head` would close the pipe on kubectl, a SIGPIPE that
# pipefail turns into a failed build)
if [ -x "$out/kubectl" ]; then "$out/kubectl" version --client | sed -n 1p; fi
