#!/usr/bin/env bash
# Builds the pinned Helm CLI the chart tests run (`helm lint`, `helm
# template`), from its Go module, because no prebuilt binaries can be
# fetched. Helm is built in a throwaway module under the cache directory, not
# from ours: its dependency graph is large and our go.mod should not carry it.
# The result is cached by version, so a second run is instant and offline.
# The last line printed is the path of the helm binary.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v4.3.2}
CACHE_ROOT=${IRONLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ironlb}
OUT=$CACHE_ROOT/helm/$HELM_VERSION
WORK=$CACHE_ROOT/build/helm-$HELM_VERSION

log() { echo "helm: $*" >&2; }

if ! { [ -x "$OUT/helm" ] && [ -f "$OUT/.helm.ok" ]; }; then
  mkdir -p "$OUT" "$WORK"
  export GOFLAGS="-mod=mod -buildvcs=false"
  export GOTOOLCHAIN=local
  (
    cd "$WORK"
    printf 'module ironlb.local/helm-build\n\ngo 1.26\n' >go.mod
    rm -f go.sum
    go get "helm.sh/helm/v4@$HELM_VERSION" >/dev/null
    log "building helm $HELM_VERSION (cold: about 8 minutes of CPU time, 2 cores)"
    # The version Helm reports comes from this variable, as Helm's own
    # Makefile sets it; without it `helm version` says only the minor.
    go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
      -o "$OUT/helm" helm.sh/helm/v4/cmd/helm
  )
  touch "$OUT/.helm.ok"
fi

"$OUT/helm" version --short >&2
echo "$OUT/helm"
