//! TODO(config helper): raw serde types
