#!/usr/bin/env bash
# Test the TypeScript client (clients/typescript) with the machine's Node.js: the shared vectors,
# the signer's rules, the fetch and axios adapters against a recording upstream, live interop
# with the real gate, and the package as a consumer installs it.
#
# Called from the repository root by `make test-typescript`; works on a fresh Debian machine:
#   1. installs Node.js and npm from Debian (apt-get, as root) when `node` (18 or later) or
#      `npm` is missing,
#   2. `npm ci` from the committed package-lock.json (typescript, @types/node and axios, all
#      devDependencies) when node_modules is missing or the lock file changed since,
#   3. builds the gate (`cargo build --bin sig-gate`; set CARGO to use another cargo),
#   4. `npm test`: tsc (strict) compiles the package and its tests, node --test runs them,
#   5. `npm pack`, then installs the tarball into an empty project with no network and no
#      other package, and signs a request through its ESM entry point and its types.
#
# Environment: SIG_GATE_BIN overrides the binary the live tests start (the build step still
# runs unless SIG_GATE_SKIP_BUILD=1).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
client="clients/typescript"
cargo="${CARGO:-cargo}"
export DEBIAN_FRONTEND=noninteractive

node_ok() {
    command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'
}
if ! node_ok || ! command -v npm >/dev/null; then
    missing=()
    node_ok || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    echo "test-typescript: installing Debian's ${missing[*]}" >&2
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
        echo "test-typescript: cannot install ${missing[*]} (needs root and Debian's archive); install Node.js 18 or later and npm" >&2
        exit 1
    fi
    node_ok || { echo "test-typescript: node $(node --version) is older than 18" >&2; exit 1; }
fi
echo "test-typescript: node $(node --version), npm $(npm --version)" >&2

# Reinstall when the lock file changed or node_modules is gone; `npm ci` also runs the
# package's `prepare` script, which compiles dist/.
stamp="$client/node_modules/.sig-gate-lock"
wanted="$(sha256sum "$client/package-lock.json" | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]]; then
    echo "test-typescript: npm ci in $client" >&2
    (cd "$client" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$wanted" >"$stamp"
fi

if [[ "${SIG_GATE_SKIP_BUILD:-0}" != "1" ]]; then
    echo "test-typescript: $cargo build --locked --bin sig-gate" >&2
    "$cargo" build --locked --bin sig-gate
fi

(cd "$client" && npm test)

# The package as a consumer gets it: only what `files` lists, its ESM entry point and types.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$client" && npm run --silent build && npm pack --silent --pack-destination "$work" >/dev/null)
tarball="$(ls "$work"/sig-gate-client-*.tgz)"
listing="$(tar -tzf "$tarball" | sort)"
for expected in package/package.json package/README.md package/dist/index.js package/dist/index.d.ts; do
    grep -qx "$expected" <<<"$listing" || { echo "test-typescript: $expected is not in the package" >&2; exit 1; }
done
if grep -q '^package/\(src\|test\|build\|node_modules\)/' <<<"$listing"; then
    echo "test-typescript: the package ships more than dist/: $(grep -c . <<<"$listing") files" >&2
    exit 1
fi
mkdir "$work/consumer"
cat >"$work/consumer/package.json" <<'EOF'
{ "name": "consumer", "version": "1.0.0", "private": true, "type": "module" }
EOF
cat >"$work/consumer/check.ts" <<'EOF'
import { GateSigner, type SignatureHeaders } from "sig-gate-client";
const headers: SignatureHeaders = GateSigner.fromEnv({
  env: { INTERSERVICE_HMAC_SECRET: "consumer-check-secret-0123456789abcdef" },
}).sign("POST", "/tools/call?x=1", "{}", { timestamp: 1764000000, nonce: "consumer-nonce-0000001" });
if (!/^[0-9a-f]{64}$/.test(headers["X-Gate-Signature"] ?? "")) {
  throw new Error(`no signature: ${JSON.stringify(headers)}`);
}
console.log(`test-typescript: the packed sig-gate-client signs (${Object.keys(headers).join(", ")})`);
EOF
(cd "$work/consumer" && npm install --offline --no-audit --no-fund --loglevel=error "$tarball" >/dev/null)
# Compile the consumer against the package's own .d.ts (strict), with the compiler installed
# above, and run it.
"$repo_root/$client/node_modules/.bin/tsc" --strict --module nodenext --moduleResolution nodenext \
    --target es2022 --types node --typeRoots "$repo_root/$client/node_modules/@types" \
    --outDir "$work/consumer/out" "$work/consumer/check.ts"
(cd "$work/consumer" && node out/check.js)
