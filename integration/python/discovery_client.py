"""Stock grpcio-reflection and grpcio-health-checking clients, as generic tools
use them, against the gateway.

usage:
  discovery_client.py reflect SOCKET v1|v1alpha
      Lists the services and describes echo.v1.Echo, zoo.v1.Zoo.Count and
      zoo.v1.CountRequest from reflection alone (no stubs, no .proto files),
      and asks for a symbol that does not exist; prints one JSON object.
  discovery_client.py check SOCKET SERVICE
      Prints the service's health status, or "error CODE".
  discovery_client.py watch SOCKET SERVICE COUNT
      Prints each status Watch sends, one a line, and exits after COUNT.

grpcio-reflection's descriptor database speaks v1alpha; for v1 the same
database is pointed at grpc.reflection.v1's method, whose messages are
v1alpha's field for field.
"""

import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def reflect(channel, version):
    db = ProtoReflectionDescriptorDatabase(channel)
    if version == "v1":
        db._stub.ServerReflectionInfo = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
    pool = DescriptorPool(db)
    echo = pool.FindServiceByName("echo.v1.Echo")
    count = pool.FindMethodByName("zoo.v1.Zoo.Count")
    request = pool.FindMessageTypeByName("zoo.v1.CountRequest")
    try:
        pool.FindMessageTypeByName("nope.v1.Nope")
        unknown = "found"
    except KeyError:
        unknown = "not found"
    return {
        "services": sorted(db.get_services()),
        "echo": {m.name: [m.input_type.full_name, m.output_type.full_name] for m in echo.methods},
        "echo_file": echo.file.name,
        "count": {
            "input": count.input_type.full_name,
            "output": count.output_type.full_name,
            "server_streaming": count.server_streaming,
        },
        "count_request": {f.name: f.number for f in request.fields},
        "unknown": unknown,
    }


def main():
    command, socket = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel("unix://" + socket) as channel:
        if command == "reflect":
            print(json.dumps(reflect(channel, sys.argv[3])))
        elif command == "check":
            health = health_pb2_grpc.HealthStub(channel)
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(service=sys.argv[3]), timeout=10)
                print(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
            except grpc.RpcError as e:
                print("error", e.code().name)
        elif command == "watch":
            health = health_pb2_grpc.HealthStub(channel)
            left = int(sys.argv[4])
            for answer in health.Watch(health_pb2.HealthCheckRequest(service=sys.argv[3]), timeout=120):
                print(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status), flush=True)
                left -= 1
                if left == 0:
                    break


main()
