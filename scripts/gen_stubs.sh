#!/usr/bin/env bash
# Generates Go, Java and TypeScript stubs of routemesh.v1 into gen/ (see protos/buf.gen.yaml).
# Needs network access to buf.build: the plugins are Buf remote plugins and run there. Offline,
# buf stops with "the server hosted at that remote is unavailable". Python stubs: scripts/gen_protos.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
buf="$(command -v buf || echo "$root/.venv/bin/buf")"  # pip install -e '.[test]' brings buf (buf-bin)
cd "$root/protos"
"$buf" lint
"$buf" generate "$@"
echo "stubs written to $root/gen/{go,java,ts}"
