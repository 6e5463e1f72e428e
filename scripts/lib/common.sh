# Shared by scripts/dev and scripts/test: SecantusDB, the local MongoDB-compatible
# database, installed from PyPI into .local/venv on first use and run as its own process.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECANTUS_VERSION="0.7.0b3"
VENV="$ROOT/.local/venv"

ensure_secantus() {
  if [ -x "$VENV/bin/secantusd-py" ] && "$VENV/bin/pip" show SecantusDB 2>/dev/null | grep "^Version: $SECANTUS_VERSION$" >/dev/null; then
    return
  fi
  echo "Installing SecantusDB $SECANTUS_VERSION into .local/venv (first run only)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # port, seconds
  local port=$1 tries=$(( $2 * 10 ))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.1
  done
}

# start_secantus PORT DATA_DIR LOG: starts it in the background, sets SECANTUS_PID.
start_secantus() {
  local port=$1 dir=$2 log=$3
  mkdir -p "$dir"
  "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path "$dir" >"$log" 2>&1 &
  SECANTUS_PID=$!
  if ! wait_for_port "$port" 30; then
    echo "SecantusDB did not start on port $port; its log:" >&2
    cat "$log" >&2
    return 1
  fi
}

stop_pid() {
  [ -n "${1:-}" ] || return 0
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

# Debian's Chromium and the e2e test's npm packages (playwright-core drives the system browser;
# it never downloads one).
ensure_browser_tools() {
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "Installing Debian's chromium for the browser tests..." >&2
      apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else
      echo "The browser tests need Debian's chromium: sudo apt-get install chromium" >&2
      return 1
    fi
  fi
  if [ ! -d "$ROOT/e2e/node_modules/playwright-core" ]; then
    (cd "$ROOT/e2e" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
