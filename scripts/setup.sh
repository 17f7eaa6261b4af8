#!/usr/bin/env bash
# Installs what building and testing btfs needs on Debian 12: libclang (RocksDB's bindings), Node.js and npm
# (the reference importer used by the tests), Chromium (the gateway's browser test drives Debian's build through
# puppeteer-core, which downloads no browser), nginx, wrk and curl (the gateway benchmark's reference server and
# clients), libtorrent's Python bindings, opentracker, mktorrent and aria2 (the BitTorrent interop tests' peers,
# tests/bt), then the npm packages of tests/js and of contracts-client/solidity (solc, anvil). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# bindgen needs libclang itself; libclang-cpp (which other packages pull in) does not do.
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v cc >/dev/null || need+=(build-essential)
# nginx lives in /usr/sbin, which a non-root PATH may lack. Installing it starts no server where
# /usr/sbin/policy-rc.d forbids it (containers); the benchmark runs its own nginx with a private config.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
# Real BitTorrent peers for the interop tests (tests/bt): libtorrent's Python bindings (only importable from
# Debian's /usr/bin/python3), a tracker, a torrent maker and a second client. The opentracker package ships a
# service listening on 0.0.0.0:6969; the tests never use it (they start their own on 127.0.0.1).
/usr/bin/python3 -c 'import libtorrent' >/dev/null 2>&1 || need+=(python3-libtorrent)
command -v opentracker >/dev/null || need+=(opentracker)
command -v mktorrent >/dev/null || need+=(mktorrent)
command -v aria2c >/dev/null || need+=(aria2)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules ]; then
  echo "setup: installing the reference JavaScript importer (tests/js)" >&2
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi

if [ ! -d contracts-client/solidity/node_modules ] || [ contracts-client/solidity/package-lock.json -nt contracts-client/solidity/node_modules ]; then
  echo "setup: installing solc and anvil for the storage market (contracts-client/solidity)" >&2
  npm ci --prefix contracts-client/solidity --no-audit --no-fund --loglevel=error
fi
