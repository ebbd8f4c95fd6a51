"""KubeVirt's Synchronize service from Python's grpcio: an independent client and server for vmsync's sync endpoint.

  sync_peer.py client MODULE_DIR ADDRESS CA CERT KEY SERVER_NAME  -- reads calls as JSON lines on stdin, prints results
  sync_peer.py server MODULE_DIR CA CERT KEY                      -- prints its port, then one JSON line per call

The generated modules (synchronization_pb2, synchronization_pb2_grpc) are in MODULE_DIR.
"""
import json
import sys
from concurrent import futures


def load(module_dir):
    sys.path.insert(0, module_dir)
    import grpc
    import synchronization_pb2 as pb
    import synchronization_pb2_grpc as rpc
    return grpc, pb, rpc


def read(path):
    with open(path, "rb") as f:
        return f.read()


def client(module_dir, address, ca, cert, key, server_name):
    grpc, pb, rpc = load(module_dir)
    credentials = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(address, credentials, options) as channel:
        stub = rpc.SynchronizeStub(channel)
        for line in sys.stdin:
            call = json.loads(line)
            method = call["method"]
            try:
                if method == "CancelMigration":
                    response = stub.CancelMigration(pb.MigrationCancelRequest(migrationUID=call["uid"]), timeout=10)
                else:
                    request = pb.VMIStatusRequest(migrationID=call["migrationID"])
                    if "status" in call:
                        request.vmiStatus.vmiStatusJson = json.dumps(call["status"]).encode()
                    response = getattr(stub, method)(request, timeout=10)
                result = {"code": "OK", "message": response.message}
            except grpc.RpcError as error:
                result = {"code": error.code().name, "details": error.details()}
            print(json.dumps(result), flush=True)


def server(module_dir, ca, cert, key):
    grpc, pb, rpc = load(module_dir)

    class Synchronize(rpc.SynchronizeServicer):
        """Answers as KubeVirt's controller does: known migrationID "known", anything else not found."""

        def record(self, method, context, **fields):
            auth = context.auth_context()
            names = [n.decode() for n in auth.get("x509_common_name", [])]
            print(json.dumps(dict(method=method, peer=names, **fields)), flush=True)

        def status(self, method, request, context, side):
            status = json.loads(request.vmiStatus.vmiStatusJson) if request.vmiStatus.vmiStatusJson else None
            self.record(method, context, migrationID=request.migrationID, status=status)
            if status is None:
                context.abort(grpc.StatusCode.UNKNOWN, f"must pass {side} status")
            if request.migrationID != "known":
                context.abort(grpc.StatusCode.UNKNOWN, f"{side}: unable to locate VMI for migrationID {request.migrationID}")
            return pb.VMIStatusResponse(message="success")

        def SyncSourceMigrationStatus(self, request, context):
            return self.status("SyncSourceMigrationStatus", request, context, "target")

        def SyncTargetMigrationStatus(self, request, context):
            return self.status("SyncTargetMigrationStatus", request, context, "source")

        def CancelMigration(self, request, context):
            self.record("CancelMigration", context, uid=request.migrationUID)
            return pb.MigrationCancelResponse(message="migration canceled")

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_SynchronizeServicer_to_server(Synchronize(), grpc_server)
    credentials = grpc.ssl_server_credentials([(read(key), read(cert))], read(ca), require_client_auth=True)
    port = grpc_server.add_secure_port("127.0.0.1:0", credentials)
    grpc_server.start()
    print(json.dumps({"port": port}), flush=True)
    grpc_server.wait_for_termination()


if __name__ == "__main__":
    role, args = sys.argv[1], sys.argv[2:]
    {"client": client, "server": server}[role](*args)
