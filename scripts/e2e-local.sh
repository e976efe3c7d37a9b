#!/usr/bin/env bash
# `make e2e-local`: the end-to-end suite (tests/e2e.rs) on a cluster of processes on this
# machine, the way Kubernetes' hack/local-up-cluster.sh runs one: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd with runc and CNI's bridge, one kubelet
# and kube-proxy, all inside a network namespace of their own (so pod traffic, iptables rules
# and the bridge never touch the machine's network) and the mount namespace `ip netns exec`
# gives them (so no mount outlives the run).
#
#   scripts/e2e-local.sh          bring the cluster up, install podtailor with
#                                 `kubectl apply -k certs`, run the suite, tear it all down
#   KEEP=1 scripts/e2e-local.sh   the same, then wait (Ctrl-C tears down) with the
#                                 kubeconfig's path printed, to look around
#
# Needs root, Linux with cgroups, Go (the Kubernetes binaries are built from
# tests/envtest/go.mod), the Rust toolchain, and Debian's containerd, runc,
# containernetworking-plugins, busybox-static, umoci and iptables (installed with apt-get when
# missing). Images are built here, never pulled: busybox:1.36 (the tasks) and the pause image
# from busybox-static, podtailor:0.1.0 from the release binary.
# Exit codes: 0 the suite passed, 1 it failed or could not run (the reason is the last line),
# 2 usage.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly root
readonly work=$root/target/e2e-local
readonly bin=$root/target/envtest/bin
readonly node_ip=10.200.0.2
readonly pod_cidr=10.88.0.0/16
readonly service_cidr=10.0.0.0/24
readonly node=e2e-node

say() { echo "e2e-local: $*" >&2; }

# PIDS...: TERM, then KILL whatever still runs after 10 s (kube-apiserver, its etcd gone, may
# wait on it for long)
stop() {
    local _ p alive
    kill "$@" 2>/dev/null || true
    for _ in $(seq 50); do
        alive=0
        for p; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 0.2
    done
    kill -KILL "$@" 2>/dev/null || true
}
die() {
    say "$*"
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Inside the namespaces: the cluster's processes, podtailor's install and the suite.
# ---------------------------------------------------------------------------------------------
inner() {
    local cgroup=$1
    local kubeconfig=$work/kubeconfig pki=$work/pki logs=$work/logs run=$work/run
    pids=()
    # shellcheck disable=SC2317 # run by the EXIT trap
    stop_all() {
        ((${#pids[@]} == 0)) || stop "${pids[@]}"
        wait 2>/dev/null || true
    }
    trap stop_all EXIT
    start() { # NAME PROGRAM ARGS...: in the background, its output in logs/NAME.log
        local name=$1
        shift
        "$@" >"$logs/$name.log" 2>&1 &
        pids+=($!)
    }
    k() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

    # `ip netns exec` mounted the namespace's own sysfs over /sys, which hides the cgroup
    # hierarchies: mount them again (the same hierarchies as the machine's).
    if ! mountpoint -q /sys/fs/cgroup; then
        if [[ $cgroup_kind == cgroup2fs ]]; then
            mount -t cgroup2 none /sys/fs/cgroup
        else
            mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
            local c
            for c in $cgroup_controllers; do
                mkdir -p "/sys/fs/cgroup/$c"
                if [[ $c == systemd ]]; then
                    mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
                else
                    mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
                fi
            done
        fi
    fi
    # the kubelet's cgroup root, which it expects to exist
    if [[ $cgroup_kind == cgroup2fs ]]; then
        mkdir -p "/sys/fs/cgroup/$cgroup"
    else
        for c in $cgroup_controllers; do mkdir -p "/sys/fs/cgroup/$c/$cgroup"; done
        cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$cgroup/cpuset.cpus"
        cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$cgroup/cpuset.mems"
    fi

    # The node's address: one end of a veth pair (the kernel here has no dummy links).
    ip link set lo up
    ip link add node0 type veth peer name node0-peer
    ip addr add "$node_ip/24" dev node0
    ip link set node0 up
    ip link set node0-peer up
    # the API server's calls to a Service's ClusterIP (the webhook's) leave through the node's
    # link, where kube-proxy's rules turn them to a pod
    ip route add "$service_cidr" dev node0
    sysctl -qw net.ipv4.ip_forward=1
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true

    say "starting etcd and kube-apiserver"
    start etcd "$bin/etcd" --data-dir "$run/etcd" --listen-client-urls http://127.0.0.1:2379 \
        --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380
    start kube-apiserver "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
        --advertise-address "$node_ip" --secure-port 6443 \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --service-cluster-ip-range "$service_cidr" \
        --kubelet-preferred-address-types InternalIP \
        --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key"
    local i
    for i in $(seq 120); do
        k get --raw /readyz >/dev/null 2>&1 && break
        ((i < 120)) || die "kube-apiserver not ready after 120 s (see $logs/kube-apiserver.log)"
        sleep 1
    done
    local auth=(--kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig"
        --authorization-kubeconfig "$kubeconfig" --leader-elect=false --bind-address 127.0.0.1)
    start kube-controller-manager "$bin/kube-controller-manager" "${auth[@]}" --secure-port 10257 \
        --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
        --use-service-account-credentials --controllers '*,-nodeipam' \
        --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key"
    start kube-scheduler "$bin/kube-scheduler" "${auth[@]}" --secure-port 10259

    say "starting containerd, the kubelet and kube-proxy"
    start containerd containerd --config "$run/containerd.toml"
    local ctr=(ctr --address "$run/containerd/containerd.sock" -n k8s.io)
    for i in $(seq 30); do
        "${ctr[@]}" version >/dev/null 2>&1 && break
        ((i < 30)) || die "containerd not answering after 30 s (see $logs/containerd.log)"
        sleep 1
    done
    local image
    for image in busybox:1.36 pause:1 podtailor:0.1.0; do
        "${ctr[@]}" images import --base-name "docker.io/library/${image%%:*}" "$work/images/${image%%:*}.tar" >/dev/null
    done
    start kubelet "$bin/kubelet" --config "$run/kubelet.yaml" --kubeconfig "$kubeconfig" \
        --hostname-override "$node" --node-ip "$node_ip" --root-dir "$run/kubelet"
    start kube-proxy "$bin/kube-proxy" --kubeconfig "$kubeconfig" --hostname-override "$node" \
        --proxy-mode iptables --cluster-cidr "$pod_cidr" --masquerade-all
    for i in $(seq 120); do
        [[ $(k get node "$node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]] && break
        ((i < 120)) || die "the node did not become Ready in 120 s (see $logs/kubelet.log)"
        sleep 1
    done
    for i in $(seq 60); do
        k get serviceaccount default >/dev/null 2>&1 && break
        ((i < 60)) || die "no default ServiceAccount after 60 s (see $logs/kube-controller-manager.log)"
        sleep 1
    done

    say "installing podtailor (kubectl apply -k certs)"
    k apply -k "$root/certs" >/dev/null
    k -n podtailor-system rollout status deployment/podtailor --timeout 300s ||
        die "podtailor's Deployment did not become available (kubectl -n podtailor-system describe pods)"
    # Available is the pods' readiness; the API server reaches them once kube-proxy has the
    # Service's endpoints: a server-side dry run of a PodOverride goes through /validate.
    for i in $(seq 60); do
        sed 's/^  namespace: .*/  namespace: default/' "$root/examples/overrides/resource-requirements.yaml" |
            k apply --dry-run=server -f - >/dev/null 2>&1 && break
        ((i < 60)) || die "the API server cannot reach podtailor's Service after 60 s (see $logs/kube-proxy.log)"
        sleep 1
    done

    say "running the scenarios"
    local status=0
    PODTAILOR_E2E=1 PODTAILOR_E2E_CONTEXT=e2e-local KUBECONFIG=$kubeconfig \
        cargo test --locked --offline --test e2e -- --ignored --test-threads=1 || status=$?
    if [[ ${KEEP:-0} == 1 ]]; then
        say "KEEP=1: the cluster stays up until Ctrl-C; from this namespace:"
        say "  ip netns exec $netns $bin/kubectl --kubeconfig $kubeconfig get pods -A"
        sleep infinity || true
    fi
    return "$status"
}

if [[ ${1:-} == --inner ]]; then
    # shellcheck disable=SC2034 # read by inner
    netns=$2 cgroup_kind=$3 cgroup_controllers=$5
    inner "$4"
    exit
fi

case "${1:-}" in
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo pipefail$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: ${0##*/} [--help]   (KEEP=1 in the environment keeps the cluster up after the suite)" >&2
        exit 2
        ;;
esac

# ---------------------------------------------------------------------------------------------
# Outside: what the cluster needs, then the namespaces, then the teardown.
# ---------------------------------------------------------------------------------------------
cd "$root"
[[ $(uname -s) == Linux ]] || die "not run: a local node needs Linux"
((EUID == 0)) || die "not run: a local node needs root (containerd, runc, network namespaces)"

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
# Debian's busybox package is dynamic: busybox-static's is the one an image can hold alone
[[ $(ldd /bin/busybox 2>&1 || true) == *"not a dynamic executable"* ]] || need+=(busybox-static)
command -v umoci >/dev/null || need+=(umoci)
command -v iptables >/dev/null || need+=(iptables)
if ((${#need[@]} > 0)); then
    command -v apt-get >/dev/null || die "not run: missing ${need[*]} and no apt-get to install them"
    say "installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; } ||
        die "apt-get install ${need[*]} failed"
fi
command -v go >/dev/null || die "not run: Go is needed to build the Kubernetes binaries (tests/envtest/go.mod)"
scripts/envtest-bin.sh --node

say "building podtailor (release) and the suite"
cargo build --locked --release --bin podtailor
cargo test --locked --test e2e --no-run
scripts/certs.sh

rm -rf "$work"
mkdir -p "$work/pki" "$work/logs" "$work/run/cni" "$work/images"

say "building the images (umoci, busybox-static, the release binary)"
image() { # NAME TAG ROOTFS-FILLER ENTRYPOINT|"" CMD...: an OCI archive in images/NAME.tar
    local name=$1 tag=$2 fill=$3 entrypoint=$4 layout=$work/images/$1 bundle=$work/images/$1.bundle
    shift 4
    umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci unpack --rootless --image "$layout:$tag" "$bundle" >/dev/null
    "$fill" "$bundle/rootfs"
    umoci repack --image "$layout:$tag" "$bundle"
    local args=() c
    [[ -z $entrypoint ]] || args+=(--config.entrypoint "$entrypoint")
    for c in "$@"; do args+=(--config.cmd "$c"); done
    umoci config --image "$layout:$tag" "${args[@]}"
    tar -C "$layout" -cf "$work/images/$name.tar" .
    rm -rf "$layout" "$bundle"
}
busybox_rootfs() {
    mkdir -p "$1/bin" "$1/tmp"
    cp /bin/busybox "$1/bin/busybox"
    local applet
    for applet in sh echo cat env sleep true false printf ls id wget nc; do ln -s busybox "$1/bin/$applet"; done
}
podtailor_rootfs() {
    # the release binary and the shared libraries it loads, as the distroless image has them
    mkdir -p "$1/usr/local/bin" "$1/tmp"
    cp target/release/podtailor "$1/usr/local/bin/podtailor"
    local lib
    for lib in $(ldd target/release/podtailor | grep -o '/[^ ]*'); do
        mkdir -p "$1$(dirname "$lib")"
        cp -L "$lib" "$1$lib"
    done
}
# as Docker Hub's: no entrypoint, sh by default
image busybox 1.36 busybox_rootfs "" sh
# the sandbox's process: sleeps until killed (the pause image's job, without its reaping)
image pause 1 busybox_rootfs /bin/sleep 2147483647
# as the Dockerfile's: the Deployment gives the args
image podtailor 0.1.0 podtailor_rootfs /usr/local/bin/podtailor serve --help

say "making the cluster's certificates"
(
    cd "$work/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=e2e-local-ca 2>/dev/null
    cert() { # NAME SUBJECT SANS
        openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 1 -extfile "$1.ext" 2>/dev/null
    }
    cert apiserver /CN=kube-apiserver "IP:$node_ip,IP:127.0.0.1,IP:${service_cidr%.*/*}.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:localhost"
    # the one user of the cluster's own components and of the suite
    cert admin /O=system:masters/CN=e2e-admin DNS:e2e-admin
    cert kubelet "/CN=system:node:$node" "IP:$node_ip,DNS:$node"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
cat >"$work/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e-local
  cluster: {server: "https://$node_ip:6443", certificate-authority: $work/pki/ca.crt}
users:
- name: e2e-admin
  user: {client-certificate: $work/pki/admin.crt, client-key: $work/pki/admin.key}
contexts:
- name: e2e-local
  context: {cluster: e2e-local, user: e2e-admin}
current-context: e2e-local
EOF

netns=podtailor-e2e-$$
cgroup=podtailor-e2e-$$
cgroup_kind=$(stat -fc %T /sys/fs/cgroup/)
cgroup_controllers=
if [[ $cgroup_kind != cgroup2fs ]]; then
    for c in cpu cpuacct cpuset memory devices freezer blkio pids hugetlb systemd; do
        [[ -d /sys/fs/cgroup/$c ]] && cgroup_controllers+="$c "
    done
fi
sed -e "s|@RUN@|$work/run|g" tests/e2e-local/containerd.toml >"$work/run/containerd.toml"
cp tests/e2e-local/cni.conflist "$work/run/cni/10-e2e-local.conflist"
sed -e "s|@RUN@|$work/run|g" -e "s|@PKI@|$work/pki|g" -e "s|@NODE_IP@|$node_ip|g" \
    -e "s|@CGROUP@|/$cgroup|g" tests/e2e-local/kubelet.yaml >"$work/run/kubelet.yaml"

# the processes in the cgroups of this run (the pids controller holds them all on cgroup v1)
cat_procs() {
    local top=/sys/fs/cgroup/pids/$cgroup
    [[ -d $top ]] || top=/sys/fs/cgroup/$cgroup
    [[ -d $top ]] || return 0
    find "$top" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' '
}

# the pods' network namespaces that containerd made in this run (CNI's, under /run/netns)
pod_netns() {
    local ns
    for ns in /run/netns/cni-*; do
        ns=${ns##*/}
        [[ $ns != "cni-*" && " $netns_before " != *" $ns "* ]] && echo "$ns"
    done
    return 0
}

# shellcheck disable=SC2317 # run by the EXIT trap
teardown() {
    local status=$?
    # The pods' processes first, while their shims live to reap them: they live in network
    # namespaces of their own (CNI's), found by their cgroups under the kubelet's root of this
    # run. A process killed after its shim is reaped by init, which may take seconds.
    local procs _ first=1
    for _ in $(seq 60); do
        procs=$(cat_procs)
        ((first)) && say "teardown: stopping the pods' processes (${procs:-none})"
        first=0
        [[ -z $procs ]] && break
        # shellcheck disable=SC2086 # a list of pids
        kill -KILL $procs 2>/dev/null || true
        sleep 0.25
    done
    # then the cluster's own (containerd's shims among them)
    local pids
    pids=$(ip netns pids "$netns" 2>/dev/null || true)
    # shellcheck disable=SC2086 # a list of pids
    [[ -z $pids ]] || stop $pids
    ip netns del "$netns" 2>/dev/null || true
    # the cgroups, deepest first
    local dir
    for dir in /sys/fs/cgroup/*/"$cgroup" /sys/fs/cgroup/"$cgroup"; do
        [[ -d $dir ]] || continue
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    # the pods' network namespaces, named by containerd under /run/netns: those of this run
    local ns
    for ns in $(pod_netns); do ip netns del "$ns" 2>/dev/null || true; done
    local left=()
    [[ -z $(ip netns pids "$netns" 2>/dev/null) && -z $(cat_procs) ]] || left+=("processes")
    ip netns list 2>/dev/null | grep -q "^$netns\b" && left+=("the network namespace $netns")
    for ns in $(pod_netns); do left+=("the pod network namespace $ns"); done
    compgen -G "/sys/fs/cgroup/*/$cgroup" >/dev/null && left+=("cgroups /sys/fs/cgroup/*/$cgroup")
    grep -q " $work/" /proc/mounts && left+=("mounts under $work")
    if ((${#left[@]} > 0)); then
        say "teardown left: ${left[*]}"
        status=1
    fi
    # the containers' layers and state; the logs stay in target/e2e-local/logs
    rm -rf "$work/run/containerd" "$work/run/kubelet" "$work/run/etcd" 2>/dev/null || true
    if ((status == 0)); then say "passed"; else say "FAILED (exit $status; logs in $work/logs)"; fi
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

netns_before=$(find /run/netns -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null || true)
ip netns add "$netns"
started=$SECONDS
ip netns exec "$netns" "$0" --inner "$netns" "$cgroup_kind" "$cgroup" "$cgroup_controllers"
say "cluster, install and suite took $((SECONDS - started)) s"
