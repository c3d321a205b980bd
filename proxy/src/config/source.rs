//! Where the mesh config comes from: a file, or text built into the binary.

use super::{ConfigError, MeshConfig};
use std::path::{Path, PathBuf};

/// What startup read and what a reload reads again.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A file; relative paths in it are relative to the file.
    File(PathBuf),
    /// Text compiled into the binary (`prescale run` without `--config`). It has no
    /// directory of its own, so relative paths in it are relative to the working
    /// directory; a reload parses the same text again.
    Builtin {
        name: &'static str,
        text: &'static str,
    },
}

impl ConfigSource {
    /// Reads (for a file), parses and validates the config.
    pub fn load(&self) -> Result<MeshConfig, ConfigError> {
        match self {
            Self::File(path) => MeshConfig::load(path),
            Self::Builtin { name, text } => MeshConfig::parse_in(text, name, Path::new("")),
        }
    }
}

impl From<PathBuf> for ConfigSource {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Builtin { name, .. } => write!(f, "{name} (built in)"),
        }
    }
}
