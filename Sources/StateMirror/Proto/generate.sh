#!/usr/bin/env bash
# Regenerates ../Generated from synchronization.proto. Needs protoc (here grpcio-tools' from PyPI:
# `pip install grpcio-tools`) and the two plugins built from the package's own dependencies:
#   swift build -c release --product protoc-gen-swift          (apple/swift-protobuf)
#   swift build -c release --product protoc-gen-grpc-swift-2   (grpc/grpc-swift-protobuf)
# PLUGINS names the directory holding them. The output is committed; CI does not run this.
set -euo pipefail
cd "$(dirname "$0")"
plugins=${PLUGINS:?set PLUGINS to the directory with protoc-gen-swift and protoc-gen-grpc-swift-2}
python3 -m grpc_tools.protoc -I . \
    --plugin=protoc-gen-swift="$plugins/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift-2="$plugins/protoc-gen-grpc-swift-2" \
    --swift_out=../Generated --swift_opt=Visibility=Public,UseAccessLevelOnImports=true \
    --grpc-swift-2_out=../Generated --grpc-swift-2_opt=Visibility=Public,Client=true,Server=true,UseAccessLevelOnImports=true \
    synchronization.proto
