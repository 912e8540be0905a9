#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) each; exits non-zero if one crashes.
#
#   bash fuzz/run.sh [SECONDS]
#
# Works on a stable toolchain: `-s none` builds without a sanitizer, so cargo-fuzz passes no
# -Z flags (its default, AddressSanitizer, needs nightly or RUSTC_BOOTSTRAP=1; these targets
# exercise safe Rust only, where ASan adds little and costs ~8x in speed). To try ASan anyway:
#   rm -f fuzz/target/.rustc_info.json; RUSTC_BOOTSTRAP=1 cargo fuzz run <target>
# (cargo caches rustc's answers there without keying them on RUSTC_BOOTSTRAP, so a probe that
# failed without it keeps failing with it).
# A crash leaves its input in fuzz/artifacts/<target>/; replay it with
#   cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>
# New corpus entries land in fuzz/corpus/<target>/ beside the seeds (seed-*), and are ignored
# by git.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
targets=(request_parse path_validate)
# Long enough for paths over MAX_PATH_BYTES (4096).
max_len=8192

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# One build for all targets, so the dependencies are compiled once.
cargo fuzz build -s none

status=0
for target in "${targets[@]}"; do
  echo "-- fuzz $target for ${seconds}s"
  mkdir -p "fuzz/corpus/$target"
  log="$(mktemp)"
  if cargo fuzz run -s none "$target" -- \
    -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
  else
    status=1
    echo "FUZZ FAILURE in $target; the fuzzer's report:"
    # The panic, the input that caused it and where it was saved, without the progress lines.
    grep -vE '^(#[0-9]+|INFO: |"|###)' "$log" || true
  fi
  rm -f "$log"
done
exit "$status"
