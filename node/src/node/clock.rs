//! The clock consensus reads for block times (a proposer dates its block with it; a validator
//! bounds a proposal's time by it, `app::MAX_BLOCK_TIME_AHEAD_MS`). Linux time namespaces cannot
//! move `CLOCK_REALTIME`, so a clock fault (`kind = "clock"`, devnet only, `POST
//! /admin/devnet/clock`) moves this clock instead: an offset of `skew_ms + jump_ms` plus
//! `drift_ppm` microseconds per second since the fault began. The system clock, and with it
//! TLS certificate validity, timers and the logs, is not moved (`docs/CHAOS.md`).

// The operator build keeps the type (the API answers that the controls are off) but never
// moves its clock.
#![cfg_attr(not(feature = "devnet"), allow(dead_code))]

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A clock fault, as `POST /admin/devnet/clock` takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockFault {
    /// A constant offset, in milliseconds (negative: behind).
    pub skew_ms: i64,
    /// Parts per million the clock gains (negative: loses) from when the fault began.
    pub drift_ppm: i64,
    /// A step at the start, in milliseconds, added to the skew.
    pub jump_ms: i64,
}

/// The most a clock fault may move the clock: a day, or 10 % drift.
const MAX_OFFSET_MS: i64 = 86_400_000;
const MAX_DRIFT_PPM: i64 = 100_000;

impl ClockFault {
    /// Refuses what is out of range, naming the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, value) in [("skew_ms", self.skew_ms), ("jump_ms", self.jump_ms)] {
            if value.abs() > MAX_OFFSET_MS {
                return Err((
                    field,
                    format!("must be within +-{MAX_OFFSET_MS}, got {value}"),
                ));
            }
        }
        if self.drift_ppm.abs() > MAX_DRIFT_PPM {
            let value = self.drift_ppm;
            return Err((
                "drift_ppm",
                format!("must be within +-{MAX_DRIFT_PPM}, got {value}"),
            ));
        }
        Ok(())
    }
}

/// The system clock, moved by the clock fault in force (none by default).
#[derive(Default)]
pub struct Clock {
    fault: Mutex<Option<(ClockFault, Instant)>>,
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock {
    /// Puts `fault` in force from now, or ends the one in force.
    pub fn set(&self, fault: Option<ClockFault>) {
        *self.fault.lock().expect("clock lock poisoned") = fault.map(|f| (f, Instant::now()));
    }

    /// The fault in force.
    pub fn fault(&self) -> Option<ClockFault> {
        let fault = self.fault.lock().expect("clock lock poisoned");
        fault.as_ref().map(|(f, _)| f.clone())
    }

    /// The clock's offset from the system clock now, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        let fault = self.fault.lock().expect("clock lock poisoned");
        fault.as_ref().map_or(0, |(f, since)| {
            let elapsed_ms = since.elapsed().as_millis() as i64;
            f.skew_ms + f.jump_ms + f.drift_ppm * elapsed_ms / 1_000_000
        })
    }

    /// Milliseconds since the Unix epoch by this clock (the system's in a build without the
    /// `devnet` feature).
    pub fn now_ms(&self) -> u64 {
        let now = system_ms();
        if !cfg!(feature = "devnet") {
            return now;
        }
        now.saturating_add_signed(self.offset_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_fault_moves_the_clock_by_its_skew_jump_and_drift_and_checks_its_ranges() {
        let clock = Clock::default();
        assert_eq!(clock.offset_ms(), 0);
        clock.set(Some(ClockFault {
            skew_ms: 30_000,
            jump_ms: -5_000,
            drift_ppm: 0,
        }));
        assert_eq!(clock.offset_ms(), 25_000);
        clock.set(Some(ClockFault {
            drift_ppm: 100_000,
            ..Default::default()
        }));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let drifted = clock.offset_ms();
        assert!((5..=20).contains(&drifted), "10 % of ~50 ms, got {drifted}");
        clock.set(None);
        assert_eq!(clock.offset_ms(), 0);
        let far = ClockFault {
            skew_ms: MAX_OFFSET_MS + 1,
            ..Default::default()
        };
        assert_eq!(far.check().unwrap_err().0, "skew_ms");
        let fast = ClockFault {
            drift_ppm: -MAX_DRIFT_PPM - 1,
            ..Default::default()
        };
        assert_eq!(fast.check().unwrap_err().0, "drift_ppm");
    }
}
