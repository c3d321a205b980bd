//! The mesh config parser on arbitrary text: never panics, and every error names the
//! file (and a line when the text has one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale_proxy::{ConfigError, MeshConfig};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match MeshConfig::parse(&text, Path::new("/fuzz/mesh.yaml")) {
        Ok(cfg) => {
            // A config that parsed serialises (as `GET /config` does) and parses back.
            let json = cfg.redacted_json();
            assert!(!json.is_null());
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("/fuzz/mesh.yaml:"), "{msg}");
            if let ConfigError::Invalid { line, .. } = &e {
                // YAML (1.1) breaks lines at CR, LF, CRLF, NEL, LS and PS; `str::lines`
                // knows only LF and CRLF.
                let lines = text
                    .replace("\r\n", "\n")
                    .replace(['\r', '\u{85}', '\u{2028}', '\u{2029}'], "\n")
                    .lines()
                    .count();
                assert!(*line <= lines + 1, "line {line} past the end: {msg}");
            }
        }
    }
});
