#!/usr/bin/env bash
# Builds zync, starts a daemon ("machine E") and a client ("machine R") on two local example
# directories, and shows an edit on E arriving on R. Ctrl-C stops both.
#   examples/demo.sh           run until Ctrl-C
#   examples/demo.sh --check   exit 0 as soon as the first edit arrived (used by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
[ "${1:-}" = "--check" ] && check=1
work=${ZYNC_DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/zync-demo.XXXXXX")}
e="$work/e" r="$work/r"
mkdir -p "$e/src" "$r"

echo "building zync (the first build takes a minute or two)..."
cargo build --quiet -p zync-daemon -p zync-client
bin="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug"

printf '# demo project\n' > "$e/README.md"
printf 'fn main() {\n    println!("hello from E");\n}\n' > "$e/src/main.rs"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# E: the daemon picks a free port (--port 0) and logs it; its token file is created beside the db.
"$bin/zync-daemon" --host 127.0.0.1 --port 0 --db "$work/sync.db" --dirs "demo:$e" 2> "$work/daemon.log" &
pids+=($!)
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on ws:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/daemon.log" | head -n 1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "the daemon did not start:"; cat "$work/daemon.log"; exit 1; }

# R: the client; its token is the daemon's (on a real R you copy E's token file over).
"$bin/zync-client" --server "ws://127.0.0.1:$port" --db "$work/sync_client.db" \
  --token-file "$work/zync.token" --dirs "demo:$r" 2> "$work/client.log" &
pids+=($!)

wait_for() { # file, text
  for _ in $(seq 300); do grep -qs "$2" "$1" && return 0; sleep 0.1; done
  echo "timed out waiting for $1; logs:"; cat "$work/daemon.log" "$work/client.log"; exit 1
}
wait_for "$r/src/main.rs" "hello from E"
echo "initial sync done: $r mirrors $e"

stamp=$(date +%H:%M:%S.%N)
printf 'edited on E at %s\n' "$stamp" > "$e/notes.txt"
wait_for "$r/notes.txt" "$stamp"
echo "an edit on E arrived on R: $(cat "$r/notes.txt")"

if [ "$check" = 1 ]; then
  echo "demo check passed"
  exit 0
fi
echo
echo "E (edit here): $e"
echo "R (watch here): $r"
echo "logs: $work/daemon.log $work/client.log"
echo "Edit files under E and watch them appear under R. Ctrl-C stops the demo."
wait
