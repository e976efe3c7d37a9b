#!/usr/bin/env bash
# Development certificates for `podtailor serve`: a local CA and a serving certificate signed
# by it. See certs/README.md. Makes only what is missing, unless --force.
#
#   scripts/certs.sh [--force] [--out DIR] [--service NAME] [--namespace NS]
#
# Writes into DIR (default: certs/ at the repository root):
#   ca.key   the CA's private key (EC P-256, mode 0600)
#   ca.crt   the CA certificate, self-signed, CA:TRUE, keyCertSign, 10 years
#   tls.key  the serving key (EC P-256, mode 0600)
#   tls.crt  the serving certificate, signed by ca.crt, serverAuth, 1 year, SANs:
#            localhost, 127.0.0.1, ::1, NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local
# In certs/, tls.crt, tls.key and ca.crt are what the kustomize overlay certs/kustomization.yaml
# turns into the Secret podtailor-tls and both webhook configurations' caBundle.
# Exit codes: 0 done (or nothing to do), 1 a problem (named on stderr), 2 usage.
set -euo pipefail

readonly CA_DAYS=3650
readonly TLS_DAYS=365
# An existing serving certificate that expires within this many seconds earns a warning.
readonly EXPIRY_WARN_SECONDS=$((30 * 24 * 3600))

prog=${0##*/}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<EOF
usage: $prog [--force] [--out DIR] [--service NAME] [--namespace NS]

Makes a development CA (ca.key, ca.crt) and a serving certificate signed by it
(tls.key, tls.crt) for podtailor serve, each only if missing.

  --force           regenerate all four files (a new CA too: update the caBundle)
  --out DIR         where to write them (default: certs/ at the repository root)
  --service NAME    the webhook Service's name (default: podtailor)
  --namespace NS    the Service's namespace (default: podtailor-system)
  -h, --help        this help
EOF
}

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage_error() {
    echo "$prog: $*" >&2
    echo "try '$prog --help'" >&2
    exit 2
}

force=0
out="$script_dir/../certs"
service=podtailor
namespace=podtailor-system

while (($# > 0)); do
    case $1 in
    --force) force=1 ;;
    --out | --service | --namespace)
        (($# >= 2)) || usage_error "$1 needs a value"
        case $1 in
        --out) out=$2 ;;
        --service) service=$2 ;;
        --namespace) namespace=$2 ;;
        esac
        shift
        ;;
    --out=*) out=${1#*=} ;;
    --service=*) service=${1#*=} ;;
    --namespace=*) namespace=${1#*=} ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) usage_error "unknown argument: $1" ;;
    esac
    shift
done

[[ -n $out ]] || usage_error "--out needs a non-empty directory"
# Service and namespace names are RFC 1123 labels: they become DNS names in the certificate.
dns_label='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
[[ $service =~ $dns_label ]] ||
    usage_error "--service '$service' is not a DNS label (lowercase letters, digits, '-', at most 63)"
[[ $namespace =~ $dns_label ]] ||
    usage_error "--namespace '$namespace' is not a DNS label (lowercase letters, digits, '-', at most 63)"

command -v openssl >/dev/null 2>&1 ||
    die "the openssl command is required but was not found; install it (Debian/Ubuntu: apt-get install openssl)"

dns_names=(localhost "$service" "$service.$namespace" "$service.$namespace.svc"
    "$service.$namespace.svc.cluster.local")
ip_addrs=(127.0.0.1 ::1)

mkdir -p -- "$out"
out=$(cd -- "$out" && pwd)
# Shown paths: relative to the working directory when inside it.
show() {
    local p=$1
    [[ $p == "$PWD"/* ]] && p=${p#"$PWD"/}
    printf '%s' "$p"
}

ca_key=$out/ca.key
ca_crt=$out/ca.crt
tls_key=$out/tls.key
tls_crt=$out/tls.crt

# Nothing is ever readable by others while it is being made; certificates are opened up below.
umask 077

# $1: a file; true when present (as a regular file).
have() { [[ -f $1 ]]; }

# A pair is complete, absent, or broken (one file without the other).
pair_state() {
    local key=$1 crt=$2
    if have "$key" && have "$crt"; then
        echo complete
    elif ! have "$key" && ! have "$crt"; then
        echo absent
    else
        echo broken
    fi
}

# $1 key, $2 certificate: true when the certificate carries the key's public key.
key_matches_cert() {
    local a b
    a=$(openssl pkey -in "$1" -pubout 2>/dev/null) || return 1
    b=$(openssl x509 -in "$2" -noout -pubkey 2>/dev/null) || return 1
    [[ -n $a && $a == "$b" ]]
}

random_serial() {
    # 16 random bytes, top bit cleared so the serial is positive in its shortest encoding.
    local hex
    hex=$(openssl rand -hex 16)
    printf '0x%x%s' $((0x${hex:0:1} & 7)) "${hex:1}"
}

not_after() { openssl x509 -in "$1" -noout -enddate | sed 's/^notAfter=//'; }

fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/^.*Fingerprint=//'; }

write_config() {
    local cfg=$work/openssl.cnf i
    {
        cat <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_srv]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = @alt
[alt]
EOF
        for i in "${!dns_names[@]}"; do echo "DNS.$((i + 1)) = ${dns_names[i]}"; done
        for i in "${!ip_addrs[@]}"; do echo "IP.$((i + 1)) = ${ip_addrs[i]}"; done
    } >"$cfg"
    printf '%s' "$cfg"
}

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

make_ca() {
    local cfg=$1
    new_key "$work/ca.key" || die "openssl could not generate the CA key"
    openssl req -x509 -new -config "$cfg" -extensions v3_ca -key "$work/ca.key" -sha256 \
        -subj "/O=podtailor development/CN=podtailor development CA" \
        -set_serial "$(random_serial)" -days "$CA_DAYS" -out "$work/ca.crt" 2>"$work/err" ||
        die "openssl could not make the CA certificate: $(cat "$work/err")"
}

# $1 config, $2 CA key, $3 CA certificate (the ones in force after this run).
make_tls() {
    local cfg=$1 cakey=$2 cacrt=$3
    new_key "$work/tls.key" || die "openssl could not generate the serving key"
    openssl req -new -config "$cfg" -key "$work/tls.key" -sha256 \
        -subj "/O=podtailor development/CN=$service.$namespace.svc" -out "$work/tls.csr" 2>"$work/err" ||
        die "openssl could not make the certificate request: $(cat "$work/err")"
    openssl x509 -req -in "$work/tls.csr" -CA "$cacrt" -CAkey "$cakey" \
        -set_serial "$(random_serial)" -days "$TLS_DAYS" -sha256 \
        -extfile "$cfg" -extensions v3_srv -out "$work/tls.crt" 2>"$work/err" ||
        die "openssl could not sign the serving certificate: $(cat "$work/err")"
    openssl verify -CAfile "$cacrt" "$work/tls.crt" >/dev/null 2>"$work/err" ||
        die "the new serving certificate does not verify against $(show "$cacrt"): $(cat "$work/err")"
}

# Problems with an existing serving certificate, one a line (none: all good).
check_tls() {
    local name
    if ! openssl verify -CAfile "$ca_crt" "$tls_crt" >/dev/null 2>&1; then
        echo "$(show "$tls_crt") does not verify against $(show "$ca_crt") (expired, or signed by another CA)"
    fi
    if ! key_matches_cert "$tls_key" "$tls_crt"; then
        echo "$(show "$tls_key") is not the key of $(show "$tls_crt")"
    fi
    for name in "${dns_names[@]}"; do
        openssl x509 -in "$tls_crt" -noout -checkhost "$name" 2>/dev/null | grep -q 'does match' ||
            echo "$(show "$tls_crt") does not name DNS:$name"
    done
    for name in "${ip_addrs[@]}"; do
        openssl x509 -in "$tls_crt" -noout -checkip "$name" 2>/dev/null | grep -q 'does match' ||
            echo "$(show "$tls_crt") does not name IP:$name"
    done
}

ca_state=$(pair_state "$ca_key" "$ca_crt")
tls_state=$(pair_state "$tls_key" "$tls_crt")

if ((!force)); then
    [[ $ca_state != broken ]] ||
        die "only one of $(show "$ca_key") and $(show "$ca_crt") exists; remove it or re-run with --force"
    [[ $tls_state != broken ]] ||
        die "only one of $(show "$tls_key") and $(show "$tls_crt") exists; remove it or re-run with --force"
    if [[ $ca_state == complete ]] && ! key_matches_cert "$ca_key" "$ca_crt"; then
        die "$(show "$ca_key") is not the key of $(show "$ca_crt"); re-run with --force"
    fi
fi

# A new CA always comes with a new serving certificate: one from a CA that is gone is no use.
make_new_ca=0
if ((force)) || [[ $ca_state == absent ]]; then
    make_new_ca=1
elif [[ $tls_state != absent ]]; then
    problems=$(check_tls)
    if [[ -n $problems ]]; then
        while IFS= read -r line; do echo "$prog: $line" >&2; done <<<"$problems"
        die "nothing changed. To reissue only the serving certificate (same CA, same caBundle), remove $(show "$tls_key") and $(show "$tls_crt") and run again; to regenerate everything, re-run with --force"
    fi
    if ! openssl x509 -in "$tls_crt" -noout -checkend "$EXPIRY_WARN_SECONDS" >/dev/null; then
        echo "$prog: warning: $(show "$tls_crt") expires $(not_after "$tls_crt"); remove tls.key and tls.crt and run again to reissue it" >&2
    fi
    if ! openssl x509 -in "$ca_crt" -noout -checkend "$EXPIRY_WARN_SECONDS" >/dev/null; then
        echo "$prog: warning: $(show "$ca_crt") expires $(not_after "$ca_crt"); re-run with --force (then update the caBundle)" >&2
    fi
    echo "$prog: nothing to do: $(show "$out") already has ca.key, ca.crt, tls.key and tls.crt, and tls.crt is valid for ${dns_names[*]} ${ip_addrs[*]} (--force regenerates them)"
    exit 0
fi

# Files are made in a private directory beside the targets and renamed into place, so an
# interrupted run leaves the old files (or none), never half of a pair.
work=$(mktemp -d "$out/.certs.tmp.XXXXXX")
cleanup() { rm -rf -- "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cfg=$(write_config)
if ((make_new_ca)); then
    make_ca "$cfg"
    make_tls "$cfg" "$work/ca.key" "$work/ca.crt"
else
    make_tls "$cfg" "$ca_key" "$ca_crt"
fi

chmod 600 "$work"/*.key
chmod 644 "$work"/*.crt
# Keys before certificates: a server that reloads on a change of tls.crt finds the new key.
written=()
if ((make_new_ca)); then
    mv -f -- "$work/ca.key" "$ca_key"
    mv -f -- "$work/ca.crt" "$ca_crt"
    written+=("$ca_key" "$ca_crt")
fi
mv -f -- "$work/tls.key" "$tls_key"
mv -f -- "$work/tls.crt" "$tls_crt"
written+=("$tls_key" "$tls_crt")

for f in "${written[@]}"; do
    case $f in
    "$ca_key") echo "$prog: wrote $(show "$f")  CA private key, EC P-256, mode 0600" ;;
    "$tls_key") echo "$prog: wrote $(show "$f")  serving private key, EC P-256, mode 0600" ;;
    "$ca_crt") echo "$prog: wrote $(show "$f")  CA certificate 'podtailor development CA', until $(not_after "$f"), SHA-256 $(fingerprint "$f")" ;;
    "$tls_crt") echo "$prog: wrote $(show "$f")  serving certificate, until $(not_after "$f"), for ${dns_names[*]} ${ip_addrs[*]}" ;;
    esac
done
if ((make_new_ca)); then
    echo "$prog: the CA is new: a webhook configuration's caBundle is its base64 (base64 -w0 $(show "$ca_crt")); the certs/ overlay sets it (kubectl apply -k certs)"
fi
