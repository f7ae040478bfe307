//! UTC time stamps, through `jiff` (calendar arithmetic done right, kept by
//! the author of ripgrep).

use std::time::SystemTime;

/// `yyyy-mm-dd_hh-mm-ss` in UTC: how run and sweep folders are named, so
/// they sort by time. A time before 1970 or past 9999 reads as the epoch.
pub fn utc_stamp(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%d_%H-%M-%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stamps_are_civil_dates_in_utc() {
        let at = |s: u64| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01_00-00-00");
        assert_eq!(at(951_782_400), "2000-02-29_00-00-00");
        assert_eq!(at(1_735_732_800 + 3661), "2025-01-01_13-01-01");
        assert_eq!(at(20_778 * 86_400), "2026-11-21_00-00-00");
    }
}
