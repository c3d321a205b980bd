//! Generates the KEDA external scaler's gRPC messages, server and client from
//! `proto/externalscaler.proto` with protox (a protobuf compiler in Rust), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/externalscaler.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_build::configure()
        .build_server(true)
        // The client is for tests (and tools); without the transport it stays generic
        // over any HTTP/2 channel, so the proxy needs no client stack.
        .build_client(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
