//! The config `prescale run` uses when given no `--config`: the example
//! `deploy/examples/sidecar.yaml`, compiled into the binary so a fresh machine needs no
//! file and no particular working directory.
//!
//! The example names no file (no TLS, no store path, no kubeconfig), only loopback
//! addresses; should it ever name one, it is taken relative to the working directory.

use prescale_proxy::ConfigSource;

/// Where the text comes from, as errors and the first log line name it.
pub const NAME: &str = "deploy/examples/sidecar.yaml";

/// The example, as it was when the binary was built.
pub const TEXT: &str = include_str!("../deploy/examples/sidecar.yaml");

/// The built-in config as a source startup and reload both read.
pub fn source() -> ConfigSource {
    ConfigSource::Builtin {
        name: NAME,
        text: TEXT,
    }
}
