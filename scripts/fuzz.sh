#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer) one after the other, each for a time.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (every target when none is named)
#
# Each target starts from its committed seeds (fuzz/corpus/TARGET, read only) and the corpus
# it grew before (target/fuzz/corpus/TARGET, where new inputs go). The bounds are libFuzzer's:
# an input that takes over FUZZ_TIMEOUT seconds (default 5) or makes the process's resident
# memory pass FUZZ_RSS_MB (default 512) is a finding, as is a panic (a property broken).
# A finding stops the run: its input is in fuzz/artifacts/TARGET/, the log's tail is printed.
# Prints libFuzzer's closing line (executions, exec/s, coverage) for each target.
#
# Environment: CARGO_FUZZ (the cargo-fuzz binary), FUZZ_BUILD_FLAGS (as `make fuzz-build`
# passes them), FUZZ_TIMEOUT, FUZZ_RSS_MB.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^podtailor-fuzz$')
fi
cargo_fuzz=${CARGO_FUZZ:-target/tools/bin/cargo-fuzz}
read -r -a build_flags <<< "${FUZZ_BUILD_FLAGS:---fuzz-dir fuzz --target-dir target/fuzz --sanitizer none}"

mkdir -p target/fuzz/logs
for t in "${targets[@]}"; do
  mkdir -p "target/fuzz/corpus/$t" "fuzz/corpus/$t"
  log="target/fuzz/logs/$t.log"
  if ! "$cargo_fuzz" fuzz run "${build_flags[@]}" "$t" "target/fuzz/corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-5}" -rss_limit_mb="${FUZZ_RSS_MB:-512}" \
      -print_final_stats=1 > "$log" 2>&1; then
    grep -A 12 -E 'panicked at|ERROR: libFuzzer|==ERROR' "$log" | grep -v '^ *[0-9]*: \|^ *at ' || tail -n 20 "$log"
    echo "fuzz: $t: a finding (input in fuzz/artifacts/$t/, log in $log)" >&2
    exit 1
  fi
  printf '%-14s %s\n' "$t" "$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
done
