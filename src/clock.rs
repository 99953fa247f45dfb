//! Deadlines and due times that cannot overflow.
//!
//! `Instant + Duration` panics when the sum does not fit the platform's clock, and a panic in
//! the daemon's loop stops every mirror. Validation bounds every duration of the
//! configuration, but a due time is also a sum of a start and a wait computed at run time
//! (backoffs, a window after the last start), so every one is computed here, never with `+`
//! (SPEC.md: every value `check-config` accepts, the daemon survives).

use std::time::Duration;

use tokio::time::Instant;

/// About thirty years: later than any deadline that matters, and small enough that every
/// platform's clock holds it and tokio's timer can still round it up (tokio caps its own
/// `sleep` at the same length, in `tokio::time::safe_delay`).
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Returns `wait` after `start`, at most [`FAR_FUTURE`] after it: a longer wait means
/// "not before anyone cares", and saying so exactly is what would overflow.
pub fn later(start: Instant, wait: Duration) -> Instant {
    let mut wait = wait.min(FAR_FUTURE);
    loop {
        // Thirty years fit every clock tokio supports; halving only guards a clock that
        // started near its own end, and ends at a zero wait, which always fits.
        if let Some(due) = start.checked_add(wait) {
            return due;
        }
        wait /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_waits_are_exact_and_long_ones_stop_at_the_far_future() {
        let start = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(later(start, hour), start + hour);
        assert_eq!(later(start, Duration::ZERO), start);
        assert_eq!(later(start, FAR_FUTURE), start + FAR_FUTURE);
        assert_eq!(later(start, Duration::MAX), start + FAR_FUTURE);
        let huge = Duration::from_secs(100_000_000_000 * 3600);
        assert_eq!(later(start, huge), start + FAR_FUTURE);
    }

    #[test]
    fn the_far_future_still_leaves_room_to_add() {
        // tokio rounds a timer's deadline up by adding most of a millisecond to it.
        let far = later(Instant::now(), Duration::MAX);
        assert!(far.checked_add(Duration::from_secs(3600)).is_some());
    }
}
