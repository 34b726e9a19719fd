#!/bin/bash
# The Pulumi CLI at the version of @pulumi/pulumi in package-lock.json: the one on PATH if there is
# one (any real user's), else built from the Go module proxy into a cache. Prints where it is. (Issue 28: the provider plugins the program needs are
# not served as Go modules, so nothing runs this in CI yet.)
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v pulumi >/dev/null 2>&1; then
  echo "pulumi-cli: using $(command -v pulumi) ($(pulumi version 2>/dev/null))"
  exit 0
fi
command -v go >/dev/null || { echo "pulumi-cli: go not found (Go 1.26 builds the CLI from the module proxy)" >&2; exit 1; }
VERSION=v$(node -p 'require("./package-lock.json").packages["node_modules/@pulumi/pulumi"].version')
CACHE=${HEADER_REWRITE_CACHE:-/var/cache/header-rewrite}/pulumi-$VERSION
if [ ! -x "$CACHE/bin/pulumi" ]; then
  started=$(date +%s)
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  PKG=github.com/pulumi/pulumi/pkg/v3
  # `go install` refuses a module with replace directives: a throw-away main module requires the CLI's
  # module, takes sdk/v3 at the same version (pkg's local ../sdk replace), and repeats its
  # module-to-module replaces.
  dir=$(go mod download -json "$PKG@$VERSION" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);if(j.Error){console.error(j.Error);process.exit(1)}console.log(j.Dir)})')
  {
    echo "module header-rewrite/pulumi-cli"
    echo "go 1.26"
    echo "require $PKG $VERSION"
    echo "require github.com/pulumi/pulumi/sdk/v3 $VERSION"
    grep -E '^replace [^ ]+ => [^.][^ ]* v' "$dir/go.mod" || true
  } > "$WORK/go.mod"
  (
    cd "$WORK"
    go get "$PKG/cmd/pulumi@$VERSION" >/dev/null
    mkdir -p "$CACHE/bin"
    go build -trimpath -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$VERSION" \
      -o "$CACHE/bin/pulumi" "$PKG/cmd/pulumi"
  )
  echo "pulumi-cli: built $VERSION in $(($(date +%s) - started)) s into $CACHE"
fi
echo "pulumi-cli: $("$CACHE/bin/pulumi" version) at $CACHE/bin/pulumi"
