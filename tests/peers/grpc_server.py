"""gRPC server (Python grpcio, raw-bytes methods, no generated code) for
tests/conformance_grpc.rs.

Usage: grpc_server.py PORT GAP_SECONDS. Service `conformance.Echo`:
- Unary: echoes the request; metadata `x-sleep-ms` delays the answer; echoes
  `x-req` back as initial metadata `x-echo` and sets trailing metadata `x-trailer`.
- ServerStream: the request is N as text; sends N messages with GAP_SECONDS
  between them (the first at once).
- ClientStream: answers the concatenation of every message.
- Bidi: echoes each message as it comes.
- Fail: INVALID_ARGUMENT with details and a binary trailer `grpc-status-details-bin`.
Prints `listening` once bound.
"""
import sys
import time
from concurrent import futures

import grpc

MAX = 32 * 1024 * 1024
GAP = 0.0


def unary(request, context):
    md = dict(context.invocation_metadata())
    if "x-req" in md:
        context.send_initial_metadata((("x-echo", md["x-req"]),))
    if "x-sleep-ms" in md:
        time.sleep(int(md["x-sleep-ms"]) / 1000)
    context.set_trailing_metadata((("x-trailer", "t-value"),))
    return request


def server_stream(request, context):
    n = int(request.decode())
    for i in range(n):
        if i:
            time.sleep(GAP)
        yield f"message {i}".encode()


def client_stream(request_iterator, context):
    return b"".join(request_iterator)


def bidi(request_iterator, context):
    for message in request_iterator:
        yield message


def fail(request, context):
    context.set_trailing_metadata((("grpc-status-details-bin", b"\x08\x03\x12\x04why!"),))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad argument: details kept")


def main(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        handlers=(grpc.method_handlers_generic_handler("conformance.Echo", handlers),),
        options=[("grpc.max_receive_message_length", MAX), ("grpc.max_send_message_length", MAX)],
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    GAP = float(sys.argv[2])
    main(int(sys.argv[1]))
