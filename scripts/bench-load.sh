#!/usr/bin/env bash
# Load benchmark of `podtailor serve` on this machine's loopback: HTTPS, HTTP/1.1 keep-alive,
# POST /mutate with the fixture AdmissionReviews, at 1, 16 and 64 connections.
#
#   scripts/bench-load.sh [--duration SECONDS] [--connections "1 16 64"] [--rounds N]
#                         [--threads N] [--warmup SECONDS] [--rate "2000 6000"] [--bin PATH] [--keep]
#
# Two cases, each run for a fixed time with wrk (https, HTTP/1.1, no h2), in rounds (3 by
# default): each round runs every case at every connection count, so the floor and mutate runs
# of a count are minutes apart at most, and the report gives the median of the rounds:
#   floor   examples/review.json without the pod's podtailor.dev/override annotation: the
#           same review, one line shorter, that does not opt in; the answer is "allowed"
#           without a patch: TLS + HTTP + parsing the review (and the server's per-request
#           log line), no template work
#   mutate  examples/review.json: the opted-in worker pod, answered with its JSON patch
# Each answer is checked once with curl first (200, allowed, a patch for mutate only), and
# the server's outcome counters on /metrics must grow only by the expected outcome.
# For each run: requests/s, p50 and p99 latency, failed requests (socket errors, timeouts and
# HTTP status >= 400), the server's peak resident memory (VmHWM of /proc/PID/status, reset
# before each run through /proc/PID/clear_refs; VmRSS is also sampled every 100 ms), the
# server's CPU time per request, and the CPU shares of the server, wrk and everything else;
# then the mutate/floor ratios of throughput and of CPU per request, each round's and their
# median.
# Then, when oha is there (PATH or $OHA), both cases at fixed rates (--rate, default 2000 and
# 6000 req/s) over the largest connection count, in as many rounds: open-loop latency (p50,
# p99, p99.9, corrected for coordinated omission, after the first second's TLS handshakes),
# which closed-loop runs at saturation cannot show, and the same for the admin port's /healthz
# as a baseline.
# The server and wrk share this machine's CPUs: compare figures from one quiet machine only.
# The server's environment passes through (RUST_LOG, PODTAILOR_*), flags aside.
# Exit codes: 0 done, 1 a problem (or failed requests, or wrong answers), 2 usage.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME, awk and printf

readonly HOST=127.0.0.1 # the only address this script ever sends to
readonly READY_TIMEOUT=60
readonly STOP_TIMEOUT=15

prog=${0##*/}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<EOF
usage: $prog [--duration SECONDS] [--connections "1 16 64"] [--rounds N]
                     [--threads N] [--warmup SECONDS] [--rate "2000 6000"] [--bin PATH] [--keep]

Builds podtailor (release), makes certs/ if missing, starts podtailor serve on
$HOST with free ports and the examples, and loads POST /mutate over HTTPS with
HTTP/1.1 keep-alive (wrk) for the floor (not opted-in) and mutate (opted-in) reviews,
in rounds; the report gives each figure's median over the rounds.

  --duration S       seconds per run (default: 10)
  --connections L    connection counts, space- or comma-separated (default: "1 16 64")
  --rounds N         rounds of every run, for medians (default: 3; 1 to 9)
  --threads N        wrk threads, at most one per connection (default: 1)
  --warmup S         an unreported mutate run before the first one (default: 2; 0: none)
  --rate L           then both cases at each of these rates (requests/s, space- or
                     comma-separated) over the largest connection count, with oha (PATH
                     or \$OHA; skipped with a note when absent), for duration + 1 s, the
                     first second left out of the latency; /healthz too, as a baseline;
                     in as many rounds (default: "2000 6000"; 0: skip)
  --bin PATH         serve this binary instead of building target/release/podtailor
  --keep             keep the work directory (server log, wrk outputs)
  -h, --help         this help
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

duration=10
connections="1 16 64"
rounds=3
threads=1
warmup=2
rate_list="2000 6000"
bin=
keep=0

while (($# > 0)); do
    case $1 in
    --duration | --connections | --rounds | --threads | --warmup | --rate | --bin)
        (($# >= 2)) || usage_error "$1 needs a value"
        case $1 in
        --duration) duration=$2 ;;
        --connections) connections=$2 ;;
        --rounds) rounds=$2 ;;
        --threads) threads=$2 ;;
        --warmup) warmup=$2 ;;
        --rate) rate_list=$2 ;;
        --bin) bin=$2 ;;
        esac
        shift
        ;;
    --keep) keep=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) usage_error "unknown argument: $1" ;;
    esac
    shift
done

# $1 a whole number from $2 to $3 (decimal, leading zeros allowed).
in_range() { [[ $1 =~ ^[0-9]{1,6}$ ]] && ((10#$1 >= $2 && 10#$1 <= $3)); }
in_range "$duration" 1 600 || usage_error "--duration must be a whole number of seconds from 1 to 600"
in_range "$warmup" 0 60 || usage_error "--warmup must be a whole number of seconds from 0 to 60"
in_range "$threads" 1 64 || usage_error "--threads must be a number from 1 to 64"
in_range "$rounds" 1 9 || usage_error "--rounds must be a number from 1 to 9"
duration=$((10#$duration)) warmup=$((10#$warmup)) threads=$((10#$threads))
rounds=$((10#$rounds))
read -r -a conns <<<"${connections//,/ }"
((${#conns[@]} > 0)) || usage_error "--connections needs at least one number"
for i in "${!conns[@]}"; do
    in_range "${conns[i]}" 1 1024 || usage_error "--connections: '${conns[i]}' is not a number from 1 to 1024"
    conns[i]=$((10#${conns[i]}))
done

# the fixed rates; none for "0"
read -r -a rates <<<"${rate_list//,/ }"
((${#rates[@]} > 0)) || usage_error "--rate needs at least one number (0: no fixed-rate runs)"
if [[ ${#rates[@]} == 1 && ${rates[0]} =~ ^0+$ ]]; then
    rates=()
fi
for i in "${!rates[@]}"; do
    in_range "${rates[i]}" 1 100000 || usage_error "--rate: '${rates[i]}' is not a number of requests per second from 1 to 100000"
    rates[i]=$((10#${rates[i]}))
done

[[ -z $bin || $bin == /* ]] || bin=$PWD/$bin

# ---- tools: this script installs nothing ------------------------------------------------------
need() {
    local tool=$1 install=$2
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but was not found; install it with: $install"
}
need wrk "apt-get install wrk"
need curl "apt-get install curl"
need openssl "apt-get install openssl"
[[ -r /proc/self/status ]] || die "/proc is required (Linux) to read the server's memory"
oha=
if ((${#rates[@]} > 0)); then
    oha=${OHA:-$(command -v oha || true)}
    if [[ -n $oha ]]; then
        [[ -x $oha ]] || die "OHA=$oha is not an executable"
        need python3 "apt-get install python3"
    fi
fi

cd "$repo"
template=examples/template.yaml
overrides=examples/overrides
declare -A body=([mutate]=examples/review.json)
cases=(floor mutate)
for f in "$template" "$overrides" "${body[mutate]}"; do
    [[ -e $f ]] || die "$f is missing (run from a podtailor checkout)"
done

if [[ -z $bin ]]; then
    need cargo "the Rust toolchain (rustup, or apt-get install cargo)"
    echo "$prog: cargo build --release --locked" >&2
    cargo build --release --locked --quiet || die "the release build failed"
    bin=target/release/podtailor
fi
[[ -x $bin ]] || die "$bin is not an executable"

if [[ ! -f certs/ca.crt || ! -f certs/tls.crt || ! -f certs/tls.key ]]; then
    scripts/certs.sh || die "scripts/certs.sh failed"
fi

# ---- the work directory, the server, cleanup ------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/podtailor-bench.XXXXXX")
server_pid=
sampler_pid=

stop_server() {
    local i
    [[ -n $server_pid ]] || return 0
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$server_pid" 2>/dev/null; then
            echo "$prog: the server did not stop within ${STOP_TIMEOUT}s of SIGTERM; killing it" >&2
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
    fi
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -z $sampler_pid ]] || kill "$sampler_pid" 2>/dev/null || true
    stop_server
    if ((keep)); then
        echo "$prog: kept $work" >&2
    else
        rm -rf -- "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The floor: the fixture review with its opt-in annotation (a line of its own, the only one in
# the annotations) taken out, so both cases parse the same pod.
body[floor]=$work/review-floor.json
sed '/"podtailor\.dev\/override":/d' "${body[mutate]}" >"${body[floor]}"
! grep -q 'podtailor\.dev/override' "${body[floor]}" ||
    die "cannot take the podtailor.dev/override annotation out of ${body[mutate]} for the floor"

# A port nothing on $HOST listens on now. The server's bind is the real test: a start that
# fails (the port was taken meanwhile) is retried with other ports.
pick_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000)) # below the usual ephemeral range (32768-60999)
        if ! (: <>"/dev/tcp/$HOST/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "found no free port on $HOST"
}

admin_get() { curl -sS --max-time 5 "http://$HOST:$admin_port$1"; }

start_server() {
    local attempt deadline
    for ((attempt = 1; attempt <= 5; attempt++)); do
        port=$(pick_port) || exit 1
        admin_port=$(pick_port) || exit 1
        ((port != admin_port)) || continue
        "$bin" serve --template "$template" --overrides "$overrides" \
            --tls-cert certs/tls.crt --tls-key certs/tls.key \
            --listen "$HOST:$port" --admin-listen "$HOST:$admin_port" --log-format json \
            >"$work/server.log" 2>&1 &
        server_pid=$!
        deadline=$((SECONDS + READY_TIMEOUT))
        while ((SECONDS < deadline)); do
            if ! kill -0 "$server_pid" 2>/dev/null; then
                wait "$server_pid" 2>/dev/null || true
                server_pid=
                break
            fi
            if curl -sf --max-time 1 -o /dev/null "http://$HOST:$admin_port/readyz" 2>/dev/null; then
                return 0
            fi
            sleep 0.1
        done
        if [[ -n $server_pid ]]; then
            stop_server
            tail -n 20 "$work/server.log" >&2
            die "the server did not become ready (/readyz) within ${READY_TIMEOUT}s"
        fi
        if ! grep -qi 'in use' "$work/server.log"; then
            tail -n 20 "$work/server.log" >&2
            die "the server exited before it was ready"
        fi
    done
    tail -n 20 "$work/server.log" >&2
    die "the server could not listen after 5 tries with other ports"
}

# ---- /proc readings --------------------------------------------------------------------------
# $1 a field of /proc/PID/status (VmRSS, VmHWM): its value in KiB.
status_kib() {
    local k v _
    while read -r k v _; do
        if [[ $k == "$1:" ]]; then
            echo "$v"
            return 0
        fi
    done <"/proc/$server_pid/status"
    echo 0
}

# The server's user + system CPU time, in clock ticks.
cpu_ticks() {
    local stat
    stat=$(<"/proc/$server_pid/stat")
    stat=${stat##*) } # past the command name
    local -a f
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12])) # utime, stime: fields 14 and 15 of the whole line
}

# The CPU time, in clock ticks, that all CPUs spent busy (user, nice, system, irq, softirq, steal).
busy_ticks() {
    local -a f
    read -r -a f </proc/stat
    echo $((f[1] + f[2] + f[3] + f[6] + f[7] + f[8]))
}

# The CPU time of this shell's finished children (wrk, through timeout), in clock ticks.
children_ticks() {
    local stat
    stat=$(<"/proc/$$/stat")
    stat=${stat##*) }
    local -a f
    read -r -a f <<<"$stat"
    echo $((f[13] + f[14])) # cutime, cstime: fields 16 and 17 of the whole line
}

ticks_per_sec=$(getconf CLK_TCK 2>/dev/null || echo 100)

# Resets VmHWM to the current VmRSS; true when the kernel allowed it.
reset_peak() { { echo 5 >"/proc/$server_pid/clear_refs"; } 2>/dev/null; }

# Samples VmRSS every 100 ms into $1 (the maximum, KiB) until killed or $2 seconds pass.
sample_rss() {
    local out=$1 limit=$2 max=0 v i
    for ((i = 0; i < limit * 10; i++)); do
        v=$(status_kib VmRSS) || break
        ((v > max)) && max=$v
        echo "$max" >"$out"
        sleep 0.1
    done
}

# podtailor_admission_requests_total by outcome, as "outcome count" lines (none if absent).
outcomes() {
    admin_get /metrics 2>/dev/null |
        sed -n 's/^podtailor_admission_requests_total{webhook="mutate",outcome="\([a-z_]*\)"} \([0-9.e+]*\)$/\1 \2/p' || true
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---- one load run -------------------------------------------------------------------------------
cat >"$work/post.lua" <<'EOF'
-- POST the file named by BENCH_BODY; report one machine-readable line at the end.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

# $1 case, $2 connections, $3 seconds; sets the globals r_* for the report.
run_load() {
    local name=$1 c=$2 secs=$3 t=$threads out line kv peak_kib sampled_kib
    local ticks0 ticks1 busy0 busy1 kids0 kids1 wall0 wall1
    ((t <= c)) || t=$c
    out=$work/wrk-$name-$c-round$round.txt
    peak_reset=0
    if reset_peak; then peak_reset=1; fi
    echo 0 >"$work/rss-max"
    sample_rss "$work/rss-max" $((secs + 30)) &
    sampler_pid=$!
    ticks0=$(cpu_ticks) busy0=$(busy_ticks) kids0=$(children_ticks) wall0=$EPOCHREALTIME
    BENCH_BODY=${body[$name]} timeout --foreground $((secs + 30)) \
        wrk --latency -t "$t" -c "$c" -d "${secs}s" --timeout 5s -s "$work/post.lua" \
        "https://$HOST:$port/mutate" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed ($name, $c connections)"; }
    ticks1=$(cpu_ticks) busy1=$(busy_ticks) kids1=$(children_ticks) wall1=$EPOCHREALTIME
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=
    kill -0 "$server_pid" 2>/dev/null || die "the server died during the $name run at $c connections"

    line=$(grep '^BENCH ' "$out") || { cat "$out" >&2; die "no result from wrk ($name, $c connections)"; }
    local -A r=()
    for kv in ${line#BENCH }; do r[${kv%%=*}]=${kv#*=}; done
    peak_kib=$(status_kib VmHWM)
    sampled_kib=$(<"$work/rss-max")
    ((peak_reset)) || peak_kib=$sampled_kib
    ((sampled_kib <= peak_kib)) || peak_kib=$sampled_kib

    r_requests=${r[requests]}
    r_failed=$((r[connect] + r[read] + r[write] + r[status] + r[timeout]))
    r_rps=$(awk -v n="${r[requests]}" -v us="${r[duration_us]}" 'BEGIN { printf "%.0f", n / (us / 1e6) }')
    r_p50=$(awk -v us="${r[p50_us]}" 'BEGIN { printf "%.3f", us / 1000 }')
    r_p99=$(awk -v us="${r[p99_us]}" 'BEGIN { printf "%.3f", us / 1000 }')
    r_peak=$(mib "$peak_kib")
    # Shares of one CPU over the run: wrk's, and everything's but the server's and wrk's.
    r_wrk=$(awk -v d=$((kids1 - kids0)) -v hz="$ticks_per_sec" -v w0="$wall0" -v w1="$wall1" \
        'BEGIN { printf "%.0f", d / hz / (w1 - w0) * 100 }')
    r_other=$(awk -v d=$((busy1 - busy0 - (ticks1 - ticks0) - (kids1 - kids0))) -v hz="$ticks_per_sec" \
        -v w0="$wall0" -v w1="$wall1" 'BEGIN { v = d / hz / (w1 - w0) * 100; printf "%.0f", v < 0 ? 0 : v }')
    r_srv=$(awk -v d=$((ticks1 - ticks0)) -v hz="$ticks_per_sec" -v w0="$wall0" -v w1="$wall1" \
        'BEGIN { printf "%.0f", d / hz / (w1 - w0) * 100 }')
    r_cpu=$(awk -v d=$((ticks1 - ticks0)) -v hz="$ticks_per_sec" -v n="${r[requests]}" \
        'BEGIN { if (n > 0) printf "%.6f", d / hz * 1e6 / n; else print 0 }')
}

# $1 case: the answer to one request with curl (HTTP/1.1, the CA trusted) is what the case needs.
check_answer() {
    local name=$1 code
    code=$(curl -sS --http1.1 --max-time 10 --cacert certs/ca.crt -o "$work/answer-$name.json" \
        -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "@${body[$name]}" \
        "https://$HOST:$port/mutate") || die "curl could not POST ${body[$name]} to https://$HOST:$port/mutate"
    [[ $code == 200 ]] || die "POST ${body[$name]}: HTTP $code: $(head -c 300 "$work/answer-$name.json")"
    grep -q '"allowed":true' "$work/answer-$name.json" ||
        die "POST ${body[$name]}: the answer does not allow the pod: $(head -c 300 "$work/answer-$name.json")"
    if [[ $name == mutate ]]; then
        grep -q '"patch":' "$work/answer-$name.json" ||
            die "POST ${body[$name]}: no patch in the answer, so this would not measure a mutation"
    else
        ! grep -q '"patch":' "$work/answer-$name.json" ||
            die "POST ${body[$name]}: the answer has a patch, so this would not measure the floor"
    fi
}

# $1 case, $2 connections, $3 requests/s: an open-loop run with oha for $duration seconds,
# latency measured from when each request was due; prints a report row (HTTP >= 400 and
# errors are failures; requests cut off by the end of the run are not).
# The fixed-rate runs start with the connections' TLS handshakes, which stall the first
# requests; the latency is taken after this many seconds (the failures over the whole run).
readonly RATE_SETTLE=1

# One fixed-rate run: $1 the case (or healthz, the admin port's /healthz: plain HTTP and no work,
# what the machine and oha give alone), $2 connections, $3 requests/s. oha sends exactly
# rate x (duration + RATE_SETTLE) requests and writes one CSV line for each answer, so the
# requests that got none are counted as failed too. Prints "req/s p50 p99 p99.9 failed"
# (milliseconds).
run_rate() {
    local name=$1 c=$2 q=$3 out=$work/oha-$1-$2-$3-round$round.csv n url
    local -a send=()
    n=$((q * (duration + RATE_SETTLE)))
    if [[ $name == healthz ]]; then
        url="http://$HOST:$admin_port/healthz"
    else
        url="https://$HOST:$port/mutate"
        send=(--cacert certs/ca.crt -m POST -T application/json -D "${body[$name]}")
    fi
    timeout --foreground $((duration + RATE_SETTLE + 60)) "$oha" --no-tui --output-format csv --http-version 1.1 \
        -c "$c" -q "$q" --latency-correction -n "$n" "${send[@]}" "$url" >"$out" 2>"$out.err" ||
        { cat "$out.err" >&2; die "oha failed ($name, $q requests/s)"; }
    python3 - "$out" "$n" "$RATE_SETTLE" <<'PY' || die "cannot read oha's report $out"
import csv, sys
path, sent, settle = sys.argv[1:]
settle = float(settle)
with open(path, newline="") as f:
    rows = [(float(r["request-start"]), float(r["request-duration"]), int(r["status"])) for r in csv.DictReader(f)]
kept = sorted(d for start, d, _ in rows if start >= settle)
if not kept:
    sys.exit(f"no answer after the first {settle:g} s in {path}")
end = max(start + d for start, d, _ in rows if start >= settle)
ms = lambda q: f"{kept[min(len(kept) - 1, int(len(kept) * q))] * 1000:.3f}"
failed = int(sent) - len(rows) + sum(1 for *_, status in rows if status >= 400)
print(f"{len(kept) / (end - settle):.0f}", ms(0.5), ms(0.99), ms(0.999), failed)
PY
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# $1 a printf format, then numbers: their median (the mean of the middle two for an even count).
median() {
    local format=$1
    shift
    printf '%s\n' "$@" | sort -g |
        awk -v f="$format" '{ v[NR] = $1 } END { printf f, NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---- main -------------------------------------------------------------------------------------
start_server
echo "$prog: podtailor serve (pid $server_pid) on https://$HOST:$port, admin http://$HOST:$admin_port" >&2
for name in "${cases[@]}"; do check_answer "$name"; done

idle_kib=$(status_kib VmRSS)
round=0
if ((warmup > 0)); then
    echo "$prog: warm-up: mutate, 16 connections, ${warmup}s (not reported)" >&2
    run_load mutate 16 "$warmup"
fi

# The outcome the server must give each case; any other outcome counted during a run is wrong.
declare -A expect=([floor]=unchanged [mutate]=patched)
# Each figure of each case/connections, one value a round (space-separated), and the rounds'
# mutate/floor ratios by connections.
declare -A v_rps=() v_p50=() v_p99=() v_cpu=() v_srv=() v_wrk=() v_other=() v_failed=() v_peak=()
declare -A ratio_rps=() ratio_cpu=()
wrong=0
failed_total=0
requests_total=0
metrics_checked=1
busiest_other=0
log_bytes0=$(stat -c %s "$work/server.log")
for ((round = 1; round <= rounds; round++)); do
    for c in "${conns[@]}"; do
        declare -A round_rps=() round_cpu=()
        for name in "${cases[@]}"; do
            echo "$prog: round $round/$rounds: $name, $c connection(s), ${duration}s" >&2
            before=$(outcomes)
            run_load "$name" "$c" "$duration"
            after=$(outcomes)
            if [[ -z $before || -z $after ]]; then
                metrics_checked=0
            else
                # Outcomes other than the expected one that grew during the run.
                bad=$(awk -v want="${expect[$name]}" 'NR == FNR { b[$1] = $2; next }
                    $1 != want && $2 - b[$1] > 0 { printf "%s%s +%d", sep, $1, $2 - b[$1]; sep = ", " }' \
                    <(printf '%s\n' "$before") <(printf '%s\n' "$after"))
                if [[ -n $bad ]]; then
                    echo "$prog: $name at $c connections: the server answered outcomes other than ${expect[$name]}: $bad" >&2
                    wrong=1
                fi
            fi
            key=$name/$c
            v_rps[$key]+=" $r_rps" v_p50[$key]+=" $r_p50" v_p99[$key]+=" $r_p99" v_cpu[$key]+=" $r_cpu"
            v_srv[$key]+=" $r_srv" v_wrk[$key]+=" $r_wrk" v_other[$key]+=" $r_other"
            v_failed[$key]=$((${v_failed[$key]:-0} + r_failed))
            v_peak[$key]=$(awk -v a="${v_peak[$key]:-0}" -v b="$r_peak" 'BEGIN { print (a + 0 > b + 0) ? a : b }')
            round_rps[$name]=$r_rps round_cpu[$name]=$r_cpu
            failed_total=$((failed_total + r_failed))
            requests_total=$((requests_total + r_requests))
            ((r_other <= busiest_other)) || busiest_other=$r_other
        done
        ratio_rps[$c]+=" $(ratio "${round_rps[mutate]}" "${round_rps[floor]}")"
        ratio_cpu[$c]+=" $(ratio "${round_cpu[mutate]}" "${round_cpu[floor]}")"
    done
done
log_bytes1=$(stat -c %s "$work/server.log")

# The fixed-rate runs, over the largest connection count: one line a round for each case/rate.
declare -A v_rate=()
rate_note=
max_c=0
for c in "${conns[@]}"; do ((c <= max_c)) || max_c=$c; done
if ((${#rates[@]} == 0)); then
    rate_note="fixed rate: not run (--rate 0)"
elif [[ -z $oha ]]; then
    rate_note="fixed rate: not run: oha not found (cargo install oha --locked, about 18 minutes on 2 cores; or OHA=PATH)"
else
    for ((round = 1; round <= rounds; round++)); do
        for rate in "${rates[@]}"; do
            for name in healthz "${cases[@]}"; do
                echo "$prog: round $round/$rounds: $name, $max_c connections, $rate requests/s (oha), $((duration + RATE_SETTLE))s" >&2
                result=$(run_rate "$name" "$max_c" "$rate") || exit 1
                v_rate[$name/$rate]+="$result"$'\n'
                failed_total=$((failed_total + ${result##* }))
            done
        done
    done
fi
sleep 2
after_kib=$(status_kib VmRSS)


echo
echo "podtailor serve: POST /mutate, HTTPS, HTTP/1.1 keep-alive; wrk -t $threads, ${duration} s a run, on $HOST"
echo "$("$bin" --version 2>/dev/null || echo podtailor); $(nproc) CPUs shared by the server and wrk; RUST_LOG ${RUST_LOG-unset}"
echo "medians of $rounds round(s); failed: the sum; peak MiB: the largest"
echo
row_format='%-7s %5s %8s %8s %8s %7s %8s | %7s %5s %5s %6s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$row_format" case conns "req/s" "p50 ms" "p99 ms" failed "peak MiB" "us/req" "srv%" "wrk%" "other%"
for c in "${conns[@]}"; do
    for name in "${cases[@]}"; do
        key=$name/$c
        # shellcheck disable=SC2059,SC2086 # the format is ours; the lists split on purpose
        printf "$row_format" "$name" "$c" "$(median %.0f ${v_rps[$key]})" "$(median %.3f ${v_p50[$key]})" \
            "$(median %.3f ${v_p99[$key]})" "${v_failed[$key]}" "${v_peak[$key]}" "$(median %.0f ${v_cpu[$key]})" \
            "$(median %.0f ${v_srv[$key]})" "$(median %.0f ${v_wrk[$key]})" "$(median %.0f ${v_other[$key]})"
    done
done
echo
line="mutate/floor: throughput"
# shellcheck disable=SC2086
for c in "${conns[@]}"; do line+=" $(median %.2f ${ratio_rps[$c]}) ($c)"; done
line+="; server CPU per request"
# shellcheck disable=SC2086
for c in "${conns[@]}"; do line+=" $(median %.2f ${ratio_cpu[$c]}) ($c)"; done
echo "$line"
if ((rounds > 1)); then
    line="mutate/floor throughput in each round:"
    sep=
    for c in "${conns[@]}"; do
        line+="$sep${ratio_rps[$c]} ($c)"
        sep=";"
    done
    echo "$line"
fi
echo
echo "failed    socket errors + timeouts (5 s) + HTTP status >= 400, as wrk counts them"
if ((peak_reset)); then
    echo "peak MiB  the server's VmHWM over the run (reset before it through clear_refs); VmRSS sampled every 100 ms too"
else
    echo "peak MiB  the largest VmRSS, sampled every 100 ms (VmHWM could not be reset here)"
fi
echo "us/req    the server's user+system CPU time per answered request, in microseconds"
echo "srv% wrk% other%  CPU used by the server, by wrk, by everything else, in % of one CPU"
echo "server RSS: $(mib "$idle_kib") MiB idle before the load, $(mib "$after_kib") MiB 2 s after it"
if ((requests_total > 0)); then
    echo "server log: $(((log_bytes1 - log_bytes0) / requests_total)) bytes per request ($(((log_bytes1 - log_bytes0) / 1024)) KiB in all, --log-format json)"
fi
if ((!metrics_checked)); then
    echo "answers: not checked under load (no podtailor_admission_requests_total on /metrics)"
elif ((!wrong)); then
    echo "answers: every run's outcomes on /metrics were the expected ones (floor unchanged, mutate patched)"
fi
echo
if ((${#v_rate[@]} > 0)); then
    echo "At fixed rates: ${rates[*]} requests/s offered over $max_c connections (oha, open loop; latency from when"
    echo "each request was due, so a stall counts for every request it delays). A run lasts $((duration + RATE_SETTLE)) s;"
    echo "the first ${RATE_SETTLE} s, the connections' TLS handshakes, is left out of the latency, not of the failures."
    echo "healthz is the admin port's /healthz (plain HTTP, no work): the latency the machine and oha add alone."
    rate_format='%-7s %5s %8s %8s %8s %8s %9s %7s\n'
    # shellcheck disable=SC2059
    printf "$rate_format" case conns offered "req/s" "p50 ms" "p99 ms" "p99.9 ms" failed
    # $1 case/rate, $2 a column of its results (one line a round), $3 a format: the rounds' median.
    # shellcheck disable=SC2046 # the column splits into its numbers on purpose
    rate_median() { median "$3" $(cut -d' ' -f"$2" <<<"${v_rate[$1]}"); }
    for rate in "${rates[@]}"; do
        for name in healthz "${cases[@]}"; do
            key=$name/$rate
            # shellcheck disable=SC2059 # the format is ours
            printf "$rate_format" "$name" "$max_c" "$rate" "$(rate_median "$key" 1 %.0f)" "$(rate_median "$key" 2 %.3f)" \
                "$(rate_median "$key" 3 %.3f)" "$(rate_median "$key" 4 %.3f)" \
                "$(awk '{ s += $5 } END { print s + 0 }' <<<"${v_rate[$key]}")"
        done
    done
else
    echo "$rate_note"
fi
if ((busiest_other > 10)); then
    echo "warning: other processes used up to ${busiest_other}% of a CPU during a run: these figures are disturbed; run again on a quiet machine"
fi

stop_server
if ((failed_total > 0 || wrong)); then
    exit 1
fi
