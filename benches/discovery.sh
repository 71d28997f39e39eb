#!/usr/bin/env bash
# Time `irsa-agent discovery` for one RSA key against the shell recipe people
# use today (openssl + basenc + jq), after checking both produce the same
# documents.
#
# Needs: a release build (cargo build --release, or BIN=path), openssl, jq,
# coreutils' basenc; hyperfine if installed (apt-get install hyperfine),
# otherwise a plain loop timed with date +%s%N. Installs nothing.
# Usage: benches/discovery.sh [RUNS]   (default 200; NO_HYPERFINE=1 forces the loop)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/target/release/irsa-agent}
RUNS=${1:-200}
ISSUER=https://oidc.example.com/cluster-a

for tool in openssl jq basenc; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "needs $BIN: run cargo build --release (or set BIN)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/sa.key" 2>/dev/null
openssl pkey -in "$work/sa.key" -pubout -out "$work/sa.pub"

# The recipe from the blog posts, written out faithfully: modulus and exponent
# from openssl, hex -> bytes -> base64url with basenc/tr, kid = base64url
# SHA-256 of the PKIX DER, documents assembled with jq.
cat > "$work/recipe.sh" <<'RECIPE'
set -euo pipefail
pub=$1 issuer=$2 out=$3
mkdir -p "$out/.well-known" "$out/openid/v1"
n=$(openssl rsa -pubin -in "$pub" -noout -modulus | cut -d= -f2 | basenc --base16 -d | basenc --base64url | tr -d '=\n')
ehex=$(openssl rsa -pubin -in "$pub" -noout -text | sed -n 's/^Exponent: [0-9]* (0x\([0-9a-fA-F]*\))$/\1/p' | tr a-f A-F)
[ $(( ${#ehex} % 2 )) -eq 1 ] && ehex=0$ehex
e=$(printf '%s' "$ehex" | basenc --base16 -d | basenc --base64url | tr -d '=\n')
kid=$(openssl pkey -pubin -in "$pub" -outform DER | openssl dgst -sha256 -binary | basenc --base64url | tr -d '=\n')
jq -n --arg kid "$kid" --arg n "$n" --arg e "$e" \
  '{keys: [{use: "sig", kty: "RSA", kid: $kid, alg: "RS256", n: $n, e: $e}]}' > "$out/openid/v1/jwks"
jq -n --arg iss "$issuer" \
  '{issuer: $iss, jwks_uri: ($iss + "/openid/v1/jwks"), response_types_supported: ["id_token"],
    subject_types_supported: ["public"], id_token_signing_alg_values_supported: ["RS256"]}' \
  > "$out/.well-known/openid-configuration"
RECIPE

agent=("$BIN" discovery --issuer "$ISSUER" --public-key "$work/sa.pub" --out "$work/agent" -q)
recipe=(bash "$work/recipe.sh" "$work/sa.pub" "$ISSUER" "$work/recipe")

# Same documents, byte for byte (both pretty-print with two spaces).
"${agent[@]}" >/dev/null
"${recipe[@]}"
for f in .well-known/openid-configuration openid/v1/jwks; do
    cmp -s "$work/agent/$f" "$work/recipe/$f" || { echo "outputs differ: $f" >&2; diff "$work/agent/$f" "$work/recipe/$f" >&2; exit 1; }
done
echo "outputs identical"

mean_ms() { # command... -> mean wall time in ms over RUNS runs
    local start end
    start=$(date +%s%N)
    for ((i = 0; i < RUNS; i++)); do "$@" >/dev/null; done
    end=$(date +%s%N)
    echo "scale=3; ($end - $start) / $RUNS / 1000000" | bc 2>/dev/null || echo $(( (end - start) / RUNS / 1000000 ))
}

if [ -z "${NO_HYPERFINE:-}" ] && command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/h.json" \
        -n irsa-agent "$(printf '%q ' "${agent[@]}")" \
        -n shell-recipe "$(printf '%q ' "${recipe[@]}")" >&2
    a=$(jq '.results[0].mean * 1000' "$work/h.json")
    r=$(jq '.results[1].mean * 1000' "$work/h.json")
else
    a=$(mean_ms "${agent[@]}")
    r=$(mean_ms "${recipe[@]}")
fi
printf 'irsa-agent discovery: %.2f ms\nshell recipe:         %.2f ms\nratio (recipe/agent): %.1fx\n' \
    "$a" "$r" "$(jq -n "$r / $a")"
