#!/usr/bin/env bash
# Builds the Go plugin example from Debian's packaged Go, gRPC and protobuf:
# GOPATH mode over /usr/share/gocode, so no module proxy and no network but
# Debian's archive. The Go code of the contracts is generated here from the
# workspace's own .proto files by Debian's protoc-gen-go and protoc-gen-go-grpc.
# Usage: build.sh OUT_DIR   -> OUT_DIR/go-echo (its path printed)
# OUT_DIR also keeps the generated code and Go's build cache (a rebuild takes seconds).
set -euo pipefail
out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# golang-github-golang-protobuf-1-5-dev, not the 1.3 that also satisfies Debian's gRPC (and that
# the go-plugin yardstick installs): gRPC encodes messages through it, and only 1.4 and later
# encode the messages protoc-gen-go 1.28 generates. The two conflict: apt swaps one for the other.
pkgs=(golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev golang-google-protobuf-dev
    protobuf-compiler protoc-gen-go protoc-gen-go-grpc)
if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
gopath="$out/gopath"
src="$gopath/src/goecho"
rm -rf "$gopath"
mkdir -p "$src"
cp "$here"/*.go "$src/"
# The .proto files carry no go_package option: each file's Go import path is given here.
imports="Mplugin/v1/plugin.proto=goecho/internal/pluginpb,Mplugin/v1/host.proto=goecho/internal/hostpb,Mecho.proto=goecho/internal/echopb"
protoc -I "$repo/proto/proto" -I "$repo/plugin-sdk/echo-plugin/proto" \
    --go_out="$gopath/src" --go_opt="$imports" \
    --go-grpc_out="$gopath/src" --go-grpc_opt="$imports" \
    plugin/v1/plugin.proto plugin/v1/host.proto echo.proto
# Static (no cgo): the binary needs no library grants under Landlock.
(cd "$src" && env GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$out/cache" \
    GOFLAGS= GOPROXY=off GOENV=off CGO_ENABLED=0 go build -trimpath -o "$out/go-echo" .)
echo "$out/go-echo"
