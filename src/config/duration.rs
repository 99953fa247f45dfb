//! TODO(config helper): durations such as "30s", "5m", "1h".
use std::time::Duration;

/// Parses a duration written `"30s"`, `"5m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}
