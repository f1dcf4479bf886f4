"""A stock grpcio (C-core) client, as a host application would write it.

usage: grpc_client.py SOCKET STUB_DIR

Calls echo.v1.Echo/Echo (unary) and zoo.v1.Zoo/Count (server streaming)
through the gateway at SOCKET with stubs generated into STUB_DIR, on a
plain `unix://` target and no channel options, and prints what came back
as one JSON object.
"""

import json
import sys

import grpc

sys.path.insert(0, sys.argv[2])

import echo_pb2  # noqa: E402
import echo_pb2_grpc  # noqa: E402
import zoo_pb2  # noqa: E402
import zoo_pb2_grpc  # noqa: E402

with grpc.insecure_channel("unix://" + sys.argv[1]) as channel:
    echo = echo_pb2_grpc.EchoStub(channel)
    zoo = zoo_pb2_grpc.ZooStub(channel)
    unary = echo.Echo(echo_pb2.EchoRequest(message="from python"), timeout=10).message
    streamed = [m.text for m in zoo.Count(zoo_pb2.CountRequest(count=5, text="tick", interval_ms=10), timeout=10)]
    print(json.dumps({"unary": unary, "streamed": streamed}))
