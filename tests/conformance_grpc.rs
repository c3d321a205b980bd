//! gRPC through the inbound listener with a third-party server and client (Python
//! grpcio, tests/peers/grpc_*.py, h2c upstream): unary, server/client/bidi streaming
//! with gaps longer than the response-header timeout, error status with details,
//! metadata and trailers, deadlines, and a 16 MiB message.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::peers::{python_usable, run_client, start_server};
use support::*;

/// Seconds between streamed messages: past the proxy's response-header timeout (1 s).
const GAP: &str = "2.5";

#[test]
fn grpc_calls_of_every_kind_pass_through() {
    if !python_usable("grpc_calls_of_every_kind_pass_through", &["grpc"]) {
        return;
    }
    let up_port = free_port();
    let _server = start_server("grpc_server.py", &[&up_port.to_string(), GAP]);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let upstream = SocketAddr::from(([127, 0, 0, 1], up_port));
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: grpc}}\nclusters:\n  - {{name: grpc, endpoints: [\"{upstream}\"], protocol: h2c, timeouts: {{response_header: 1s, stream_idle: 30s}}}}\n"
    );
    let proxy = Proxy::start(&cfg, admin);

    let run = run_client(
        "grpc_client.py",
        &[&listen.to_string(), GAP],
        Duration::from_secs(120),
    );
    for check in [
        "unary",
        "metadata_and_trailers",
        "server_stream_with_gaps",
        "client_stream_with_gaps",
        "bidi_with_gaps",
        "error_status_details",
        "deadline_exceeded",
        "deadline_longer_than_header_timeout",
        "message_16_mib",
    ] {
        assert!(
            run.passed(check),
            "{check} failed:\n{}\nproxy log:\n{}",
            run.output,
            proxy.logs()
        );
    }
    assert!(run.success, "{}", run.output);
}
