"""gRPC client (Python grpcio) for tests/conformance_grpc.rs: runs each check against
tests/peers/grpc_server.py (through the proxy) and prints `ok <check>` or
`FAIL <check>: <why>`; exits 1 if any check failed.

Usage: grpc_client.py TARGET GAP_SECONDS.
"""
import sys
import time

import grpc

MAX = 32 * 1024 * 1024
failures = 0


def report(name, ok, why=""):
    global failures
    if ok:
        print(f"ok {name}", flush=True)
    else:
        failures += 1
        print(f"FAIL {name}: {why}", flush=True)


def check(name, fn):
    try:
        fn()
    except grpc.RpcError as e:
        report(name, False, f"{e.code()} {e.details()}")
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        report(name, False, repr(e))


def main(target, gap):
    channel = grpc.insecure_channel(
        target,
        options=[("grpc.max_receive_message_length", MAX), ("grpc.max_send_message_length", MAX)],
    )
    unary = channel.unary_unary("/conformance.Echo/Unary")
    server_stream = channel.unary_stream("/conformance.Echo/ServerStream")
    client_stream = channel.stream_unary("/conformance.Echo/ClientStream")
    bidi = channel.stream_stream("/conformance.Echo/Bidi")
    fail = channel.unary_unary("/conformance.Echo/Fail")
    long = 10 + 4 * gap

    def c_unary():
        got = unary(b"ping", timeout=10)
        report("unary", got == b"ping", repr(got))

    def c_metadata():
        got, call = unary.with_call(b"md", timeout=10, metadata=(("x-req", "r-value"),))
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        ok = got == b"md" and initial.get("x-echo") == "r-value" and trailing.get("x-trailer") == "t-value"
        report("metadata_and_trailers", ok, f"initial {initial} trailing {trailing}")

    def c_server_stream():
        t = time.monotonic()
        got = list(server_stream(b"3", timeout=long))
        want = [b"message 0", b"message 1", b"message 2"]
        took = time.monotonic() - t
        report("server_stream_with_gaps", got == want and took >= 2 * gap, f"{got} in {took:.1f}s")

    def c_client_stream():
        def parts():
            for p in (b"a", b"b", b"c"):
                yield p
                time.sleep(gap)

        got = client_stream(parts(), timeout=long)
        report("client_stream_with_gaps", got == b"abc", repr(got))

    def c_bidi():
        def parts():
            for i in range(3):
                if i:
                    time.sleep(gap)
                yield f"bidi {i}".encode()

        got = list(bidi(parts(), timeout=long))
        want = [b"bidi 0", b"bidi 1", b"bidi 2"]
        report("bidi_with_gaps", got == want, repr(got))

    def c_error():
        try:
            fail(b"x", timeout=10)
            report("error_status_details", False, "no error")
        except grpc.RpcError as e:
            trailing = dict(e.trailing_metadata() or ())
            ok = (
                e.code() == grpc.StatusCode.INVALID_ARGUMENT
                and e.details() == "bad argument: details kept"
                and trailing.get("grpc-status-details-bin") == b"\x08\x03\x12\x04why!"
            )
            report("error_status_details", ok, f"{e.code()} {e.details()!r} {trailing}")

    def c_deadline_exceeded():
        t = time.monotonic()
        try:
            unary(b"slow", timeout=0.5, metadata=(("x-sleep-ms", "3000"),))
            report("deadline_exceeded", False, "answered despite the deadline")
        except grpc.RpcError as e:
            took = time.monotonic() - t
            ok = e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and took < 2.5
            report("deadline_exceeded", ok, f"{e.code()} after {took:.1f}s")

    def c_deadline_longer_than_header_timeout():
        # The answer comes after `gap` seconds, past the proxy's response-header timeout
        # but within the call's own deadline (grpc-timeout), which bounds it instead.
        ms = int(gap * 1000)
        got = unary(b"late", timeout=long, metadata=(("x-sleep-ms", str(ms)),))
        report("deadline_longer_than_header_timeout", got == b"late", repr(got))

    def c_large():
        payload = bytes(range(256)) * (16 * 1024 * 1024 // 256)
        got = unary(payload, timeout=60)
        report("message_16_mib", got == payload, f"{len(got)} bytes back")

    check("unary", c_unary)
    check("metadata_and_trailers", c_metadata)
    check("server_stream_with_gaps", c_server_stream)
    check("client_stream_with_gaps", c_client_stream)
    check("bidi_with_gaps", c_bidi)
    check("error_status_details", c_error)
    check("deadline_exceeded", c_deadline_exceeded)
    check("deadline_longer_than_header_timeout", c_deadline_longer_than_header_timeout)
    check("message_16_mib", c_large)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
    sys.exit(1 if failures else 0)
