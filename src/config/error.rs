//! TODO(config helper): configuration errors with file, line and column.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
