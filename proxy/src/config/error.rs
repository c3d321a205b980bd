//! The error a config file is rejected with.

/// Why a config file was rejected. Displayed as `file:line:column: reason` so editors
/// and CI logs can jump to it; line and column are 0 when no position is known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        reason: String,
    },
}

// === impl ConfigError ===

impl ConfigError {
    /// The 1-based line the problem is on, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Invalid { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }
}
