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

# apt_install PACKAGE PURPOSE: a Debian package, installed as root (updating the package lists
# only when the first try fails); otherwise says how to install it and fails.
apt_install() {
  local package=$1 purpose=$2
  if [ "$(id -u)" != 0 ]; then
    echo "$purpose needs Debian's $package: sudo apt-get install $package" >&2
    return 1
  fi
  echo "Installing Debian's $package for $purpose..." >&2
  apt-get install -y -q "$package" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$package" >/dev/null; }
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

# start_server BINARY PORT DATA_DIR LOG: a SecantusDB server (either; same flags) in the
# background; sets SERVER_PID, and stops it again when it does not come up.
start_server() {
  local binary=$1 port=$2 dir=$3 log=$4
  mkdir -p "$dir"
  "$binary" --host 127.0.0.1 --port "$port" --storage-path "$dir" >"$log" 2>&1 &
  SERVER_PID=$!
  if ! wait_for_port "$port" 30; then
    echo "$(basename "$binary") did not start on port $port; its log:" >&2
    cat "$log" >&2
    stop_pid "$SERVER_PID"
    return 1
  fi
}

# start_secantus PORT DATA_DIR LOG: the Python server; sets SECANTUS_PID.
start_secantus() {
  start_server "$VENV/bin/secantusd-py" "$@"
  SECANTUS_PID=$SERVER_PID
}

stop_pid() {
  [ -n "${1:-}" ] || return 0
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

# Debian's Chromium and the e2e tests' npm packages: playwright-core drives the system browser
# (it never downloads one); the Vercel CLI brings @vercel/rust, which the vercel dev tests run.
ensure_browser_tools() {
  [ -x /usr/bin/chromium ] || apt_install chromium "the browser tests" || return 1
  local package
  for package in playwright-core @vercel/rust axe-core; do
    if [ ! -d "$ROOT/e2e/node_modules/$package" ]; then
      (cd "$ROOT/e2e" && npm ci --no-audit --no-fund --loglevel=error)
      return
    fi
  done
}

# The tools `vercel build` needs here, pinned, installed on first use into .local/ (ignored by
# git) and reused by every later run in this checkout: cargo-zigbuild (crates.io) and zig (PyPI's `ziglang`, run as
# `.local/venv/bin/python3 -m ziglang`) for @vercel/rust's cross-compiling `cargo zigbuild`, and the
# Vercel CLI (npm, pinned in e2e/package.json, installed by `npm ci` into e2e/node_modules).
ZIGBUILD_VERSION="0.24.1"
ZIGLANG_VERSION="0.17.1"
VERCEL_CLI_VERSION="58.10.0"
TOOLS="$ROOT/.local/tools"
VERCEL_CLI="$ROOT/e2e/node_modules/.bin/vercel"

ensure_vercel_build_tools() {
  if ! "$TOOLS/bin/cargo-zigbuild" --version 2>/dev/null | grep -x "cargo-zigbuild $ZIGBUILD_VERSION" >/dev/null; then
    echo "Installing cargo-zigbuild $ZIGBUILD_VERSION into .local/tools (first run only)..." >&2
    # Its own temporary target dir, whatever CARGO_TARGET_DIR says.
    env -u CARGO_TARGET_DIR cargo install cargo-zigbuild --version "$ZIGBUILD_VERSION" --locked \
      --quiet --root "$TOOLS"
  fi
  [ -x "$VENV/bin/python3" ] || python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" show ziglang 2>/dev/null | grep -x "Version: $ZIGLANG_VERSION" >/dev/null; then
    echo "Installing ziglang $ZIGLANG_VERSION into .local/venv (first run only)..." >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
  fi
  local have=""
  have=$(node -p 'require(process.argv[1]).version' "$ROOT/e2e/node_modules/vercel/package.json" 2>/dev/null || true)
  if [ "$have" != "$VERCEL_CLI_VERSION" ] || [ ! -x "$VERCEL_CLI" ]; then
    echo "Installing e2e/ npm packages with the Vercel CLI $VERCEL_CLI_VERSION (first run only)..." >&2
    (cd "$ROOT/e2e" && npm ci --no-audit --no-fund --loglevel=error)
    have=$(node -p 'require(process.argv[1]).version' "$ROOT/e2e/node_modules/vercel/package.json" 2>/dev/null || true)
    if [ "$have" != "$VERCEL_CLI_VERSION" ]; then
      echo "e2e/package.json must pin \"vercel\": \"$VERCEL_CLI_VERSION\" in devDependencies (npm ci installed '${have:-nothing}')" >&2
      return 1
    fi
  fi
}

# rust-toolchain.toml pins the toolchain by number. rustup cannot download one here, so a
# machine whose rustup has that release only as `stable` gets it linked under its number.
ensure_toolchain() {
  local want
  want=$(sed -n 's/^channel = "\(.*\)"$/\1/p' "$ROOT/rust-toolchain.toml")
  if [ -n "$want" ] && ! rustup toolchain list | grep -q "^$want"; then
    if RUSTUP_TOOLCHAIN=stable rustc --version | grep -q "^rustc $want "; then
      # `rustup toolchain link` refuses release-like names; a link in the toolchains folder is
      # what rustup itself would find.
      local sysroot host
      sysroot=$(RUSTUP_TOOLCHAIN=stable rustc --print sysroot)
      host=$(RUSTUP_TOOLCHAIN=stable rustc -vV | sed -n 's/^host: //p')
      echo "Using the installed stable toolchain as $want-$host (rust-toolchain.toml)" >&2
      ln -s "$sysroot" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$want-$host"
    fi
  fi
}
ensure_toolchain

# SecantusDB's Rust server, `secantusd-rs` (crates.io `secantus-mdb`, pinned), for the scale
# benchmarks (scripts/bench; ~10x faster than the Python server on 100,000 tasks, same flags)
# and the second pass of the store's tests (scripts/test). Built once per machine into
# .local/tools (~5 min on two cores); needs Debian's cmake (installed here as root when
# missing). scripts/dev keeps the Python server.
SECANTUS_RS_VERSION="0.5.3-beta.196"
SECANTUS_RS="$TOOLS/bin/secantusd-rs"

ensure_secantus_rs() {
  if [ -x "$SECANTUS_RS" ] && cargo install --list --root "$TOOLS" 2>/dev/null \
      | grep -x "secantus-mdb v$SECANTUS_RS_VERSION:" >/dev/null; then
    return
  fi
  command -v cmake >/dev/null || apt_install cmake "building secantusd-rs" || return 1
  echo "Installing secantusd-rs (secantus-mdb $SECANTUS_RS_VERSION) into .local/tools (first run only, ~5 min)..." >&2
  # Its own temporary target dir, whatever CARGO_TARGET_DIR says; run outside the checkout so
  # rust-toolchain.toml does not pick the toolchain (--ignore-rust-version covers its MSRV).
  (cd / && env -u CARGO_TARGET_DIR cargo install secantus-mdb --version "$SECANTUS_RS_VERSION" \
    --locked --ignore-rust-version --quiet --root "$TOOLS")
  [ -x "$SECANTUS_RS" ] || { echo "secantus-mdb $SECANTUS_RS_VERSION installed no $SECANTUS_RS" >&2; return 1; }
}

# start_secantus_rs PORT DATA_DIR LOG: secantusd-rs; sets SECANTUS_RS_PID.
start_secantus_rs() {
  start_server "$SECANTUS_RS" "$@"
  SECANTUS_RS_PID=$SERVER_PID
}
