//! WebSocket through the inbound listener, with a third-party server and client (the
//! Python `websockets` package, tests/peers/ws_*.py): text, binary, ping, close codes
//! both ways, and a connection idle longer than the response-header timeout.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::peers::{python_usable, run_client, start_server};
use support::*;

/// Short on purpose: the idle check waits past it.
const RESPONSE_HEADER: &str = "1s";
const IDLE_SECONDS: &str = "3";

#[test]
fn websocket_frames_and_an_idle_connection_pass_through() {
    if !python_usable(
        "websocket_frames_and_an_idle_connection_pass_through",
        &["websockets"],
    ) {
        return;
    }
    let up_port = free_port();
    let _server = start_server("ws_server.py", &[&up_port.to_string()]);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let upstream = SocketAddr::from(([127, 0, 0, 1], up_port));
    // body_read_timeout (the client's pauses in a request body) is short too: an
    // upgraded connection must not be held to it either.
    let cfg = format!(
        "admin:\n  address: {admin}\nlimits:\n  body_read_timeout: 1s\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: ws}}\nclusters:\n  - {{name: ws, endpoints: [\"{upstream}\"], timeouts: {{response_header: {RESPONSE_HEADER}, stream_idle: 30s}}}}\n"
    );
    let proxy = Proxy::start(&cfg, admin);

    let run = run_client(
        "ws_client.py",
        &[&format!("ws://{listen}/chat"), IDLE_SECONDS],
        Duration::from_secs(60),
    );
    for check in [
        "text",
        "binary",
        "ping",
        "idle",
        "server_close",
        "client_close",
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

#[test]
fn an_idle_websocket_is_closed_after_stream_idle() {
    // The bound still exists: no bytes either way for stream_idle ends the connection.
    if !python_usable(
        "an_idle_websocket_is_closed_after_stream_idle",
        &["websockets"],
    ) {
        return;
    }
    let up_port = free_port();
    let _server = start_server("ws_server.py", &[&up_port.to_string()]);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let upstream = SocketAddr::from(([127, 0, 0, 1], up_port));
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: ws}}\nclusters:\n  - {{name: ws, endpoints: [\"{upstream}\"], timeouts: {{response_header: 1s, stream_idle: 2s}}}}\n"
    );
    let _proxy = Proxy::start(&cfg, admin);
    let run = run_client(
        "ws_client.py",
        &[&format!("ws://{listen}/chat"), "4"],
        Duration::from_secs(60),
    );
    assert!(run.passed("text"), "{}", run.output);
    assert!(
        run.output.contains("FAIL idle"),
        "idle past stream_idle (2s) must end the connection:\n{}",
        run.output
    );
}
