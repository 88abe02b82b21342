#!/usr/bin/env bash
# Builds the real control plane the tests run against (kube-apiserver, etcd,
# kubectl) and the parts of a real cluster the lab runs (kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy) from their Go modules,
# because no prebuilt binaries can be fetched.
# The result is cached outside the repository, keyed by version, so a second
# run is instant and offline. The last line printed is the directory, ready
# for KUBEBUILDER_ASSETS.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}
CACHE_ROOT=${IRONLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ironlb}
OUT=$CACHE_ROOT/k8s/$K8S_VERSION
WORK=$CACHE_ROOT/build

log() { echo "envtest-assets: $*" >&2; }

have() { [ -x "$OUT/$1" ] && [ -f "$OUT/.$1.ok" ]; }

mkdir -p "$OUT" "$WORK"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local

# The k8s.io/kubernetes module requires every staging module at v0.0.0 and
# replaces it with ./staging/..., which only works inside its own repository.
# A wrapper module repeats those replaces with the published v0.X.Y
# versions, so `go build` can resolve the whole graph from the module proxy.
build_kubernetes() {
  local dir=$WORK/kubernetes-$K8S_VERSION staging_version mod
  staging_version=v0.${K8S_VERSION#v1.}
  mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$mod" ] || { log "cannot download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  mkdir -p "$dir"
  {
    echo "module ironlb.local/kubernetes-build"
    echo
    grep -E '^(go|godebug) ' "$mod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # staging modules: required at v0.0.0 and replaced by a ./staging path
    awk '/=> \.\/staging\// { print $1 }' "$mod" | sort -u | while read -r m; do
      if grep -qE "^[[:space:]]+$m v0\.0\.0\$" "$mod"; then
        echo "	$m => $m $staging_version"
      fi
    done
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  (
    cd "$dir"
    go mod tidy >/dev/null
    local major=${K8S_VERSION#v}; major=${major%%.*}
    local minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
    local ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
      ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for cmd in "${KUBERNETES_CMDS[@]}"; do
      if ! have "$cmd"; then
        log "building $cmd $K8S_VERSION (kube-apiserver cold takes about 20 minutes on 2 cores, the others share its build cache)"
        go build -trimpath -ldflags "$ld" -o "$OUT/$cmd" "k8s.io/kubernetes/cmd/$cmd"
        touch "$OUT/.$cmd.ok"
      fi
    done
  )
}

# etcd's server module has a main package at its root.
build_etcd() {
  local dir=$WORK/etcd-$ETCD_VERSION
  mkdir -p "$dir"
  printf 'module ironlb.local/etcd-build\n\ngo 1.23\n' >"$dir/go.mod"
  (
    cd "$dir"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
    log "building etcd $ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
    touch "$OUT/.etcd.ok"
  )
}

# Built in this order: kube-apiserver fills the build cache the others
# mostly reuse.
# kube-apiserver first: it fills the build cache the others mostly reuse
# (the four node components took 4m38s of CPU after it).
KUBERNETES_CMDS=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy)

have etcd || build_etcd
for cmd in "${KUBERNETES_CMDS[@]}"; do
  have "$cmd" || { build_kubernetes; break; }
done

"$OUT/kube-apiserver" --version >&2
"$OUT/kubectl" version --client >&2 2>/dev/null || true
echo "$OUT"
