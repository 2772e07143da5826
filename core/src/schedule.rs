//! The schedule aggregate's calendar: which instants a schedule fires at, and which of the
//! due ones a region fires now. I/O-free and deterministic: the same spec gives the same
//! occurrences in every region, whatever the evaluation start (property-tested), because
//! the IANA database is compiled in (jiff's bundled tzdb, never the host's zoneinfo).
//!
//! A cron expression (croner: 5 fields, or 6 with seconds first) matches wall-clock times;
//! the zone (jiff) turns them into instants. Between two transitions of the zone the offset
//! is constant, so the wall times of one such segment map to instants one for one, in
//! order. At a transition:
//! - forward (a gap, spring forward): the gap's wall times do not exist. `skip` drops them
//!   (counted as skipped by DST); `after_gap` fires once at the transition instant, the
//!   first instant after the gap (Vixie cron's choice). Several gap matches, or a match at
//!   the gap's end too, coalesce into that one occurrence.
//! - backward (a fold, fall back): the fold's wall times happen twice. `first` fires on
//!   the earlier only (Vixie cron's choice); `both` fires on both, the later with fold 1.
//!
//! An occurrence's identity is (key, UTC instant, fold): [`occurrence_id`].

use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use rf_schemas::ScheduleSpec;
use std::str::FromStr;

/// At most this many zone segments are walked looking for the next match (a 29 February
/// schedule crosses about 16 in a DST zone; an impossible one ends at croner's year limit).
const MAX_SEGMENTS: usize = 2_000;
/// At most this many due occurrences are enumerated in one evaluation; the rest are taken
/// up by the next (the engine keeps the cursor).
pub const MAX_DUE_PER_EVALUATION: usize = 10_000;
/// Longest cron expression, payload and zone name accepted.
pub const MAX_CRON_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGap {
    Skip,
    AfterGap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFold {
    First,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Occurrences noticed later than the tolerance are not fired.
    Skip,
    /// Of the late ones, fire the latest once (unless one on time fires with them).
    Coalesce,
    /// Fire each late one, the latest `catch_up_max`.
    CatchUp,
}

/// A parsed, validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: TimeZone,
    pub on_gap: OnGap,
    pub on_fold: OnFold,
    pub missed: Missed,
    pub catch_up_max: usize,
    pub window_ms: i64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

/// One occurrence: its instant (ms, a whole second), its fold (1 only for the second of a
/// repeated wall time), its wall time in the zone (RFC 3339 with offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub at_ms: i64,
    pub fold: u8,
    pub wall: String,
    /// Fired at the end of a DST gap for a wall time in it.
    pub after_gap: bool,
    /// Wall times in DST gaps dropped (`on_gap = skip`) since the previous occurrence.
    pub dst_skipped: u32,
}

/// What a region fires now (`Schedule::due`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    /// In instant order.
    pub fire: Vec<Occurrence>,
    /// Late occurrences the missed policy dropped.
    pub missed: u64,
    /// Gap wall times dropped by `on_gap = skip` among the occurrences passed.
    pub dst_skipped: u64,
    /// The last due instant enumerated (fired or not): the next evaluation starts after it.
    pub cursor_ms: i64,
    /// The first occurrence not due yet, if any.
    pub next: Option<Occurrence>,
}

impl Schedule {
    /// Parse and check a spec; the error names the field.
    pub fn parse(s: &ScheduleSpec) -> Result<Schedule, String> {
        if s.cron.len() > MAX_CRON_BYTES {
            return Err(format!("cron: longer than {MAX_CRON_BYTES} bytes"));
        }
        let fields = s.cron.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(format!(
                "cron: {:?} has {fields} fields; 5 (minute hour day month weekday) or 6 (seconds first) expected",
                s.cron
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&s.cron)
            .map_err(|e| format!("cron: {:?}: {e}", s.cron))?;
        if s.zone.is_empty() || s.zone.len() > MAX_CRON_BYTES {
            return Err("zone: an IANA time zone name is required".into());
        }
        let tz = jiff::tz::db()
            .get(&s.zone)
            .map_err(|_| format!("zone: {:?} is not an IANA time zone", s.zone))?;
        let on_gap = match s.on_gap.as_str() {
            "skip" => OnGap::Skip,
            "after_gap" => OnGap::AfterGap,
            o => return Err(format!("on_gap: {o:?}; skip or after_gap expected")),
        };
        let on_fold = match s.on_fold.as_str() {
            "first" => OnFold::First,
            "both" => OnFold::Both,
            o => return Err(format!("on_fold: {o:?}; first or both expected")),
        };
        let missed = match s.missed.as_str() {
            "skip" => Missed::Skip,
            "coalesce" => Missed::Coalesce,
            "catch_up" => Missed::CatchUp,
            o => {
                return Err(format!(
                    "missed: {o:?}; skip, coalesce or catch_up expected"
                ))
            }
        };
        if s.catch_up_max < 1 {
            return Err(format!(
                "catch_up_max: {} must be at least 1",
                s.catch_up_max
            ));
        }
        if s.catch_up_window_ms < 0 {
            return Err(format!(
                "catch_up_window_ms: {} must not be negative",
                s.catch_up_window_ms
            ));
        }
        if let (Some(a), Some(b)) = (s.start_ms, s.end_ms) {
            if a > b {
                return Err(format!("start_ms {a} is after end_ms {b}"));
            }
        }
        for (name, v) in [("start_ms", s.start_ms), ("end_ms", s.end_ms)] {
            if v.is_some_and(|v| Timestamp::from_millisecond(v).is_err()) {
                return Err(format!("{name}: out of range"));
            }
        }
        let sched = Schedule {
            cron,
            tz,
            on_gap,
            on_fold,
            missed,
            catch_up_max: s.catch_up_max as usize,
            window_ms: s.catch_up_window_ms,
            start_ms: s.start_ms,
            end_ms: s.end_ms,
        };
        Ok(sched)
    }

    /// The first match at or after the wall time `naive` (seconds, the civil time read as
    /// if UTC), if any before croner's year limit.
    fn cron_at_or_after(&self, naive: i64) -> Option<i64> {
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp(naive, 0)?;
        self.cron
            .find_next_occurrence(&t, true)
            .ok()
            .map(|d| d.timestamp())
    }

    fn offset_at(&self, second: i64) -> Option<i64> {
        let ts = Timestamp::from_second(second).ok()?;
        Some(i64::from(self.tz.to_offset(ts).seconds()))
    }

    /// Whether the wall time `naive`, read at offset `off`, is the second of a repeated
    /// wall time.
    fn is_second_instance(&self, naive: i64, off: i64) -> bool {
        let Some(civil) = civil_of(naive) else {
            return false;
        };
        match self.tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Fold { before, after } => {
                before != after && i64::from(after.seconds()) == off
            }
            _ => false,
        }
    }

    fn occurrence(&self, second: i64, fold: u8, after_gap: bool, skipped: u32) -> Occurrence {
        Occurrence {
            at_ms: second * 1000,
            fold,
            wall: self.wall(second),
            after_gap,
            dst_skipped: skipped,
        }
    }

    /// The wall time of instant `second` in the zone, RFC 3339 with offset.
    pub fn wall(&self, second: i64) -> String {
        match Timestamp::from_second(second) {
            Ok(ts) => ts
                .to_zoned(self.tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            Err(_) => String::new(),
        }
    }

    /// The first occurrence strictly after `after_ms`, within start and end.
    pub fn next_after(&self, after_ms: i64) -> Option<Occurrence> {
        let mut cur = after_ms.div_euclid(1000) + 1;
        if let Some(s) = self.start_ms {
            cur = cur.max(s.div_euclid(1000) + i64::from(s.rem_euclid(1000) != 0));
        }
        let mut skipped = 0u32;
        for _ in 0..MAX_SEGMENTS {
            let ts = Timestamp::from_second(cur).ok()?;
            let off = self.offset_at(cur)?;
            let transition = self.tz.following(ts).next();
            let seg_end = transition.as_ref().map(|t| t.timestamp().as_second());
            let found = self.cron_at_or_after(cur + off);
            match (found, seg_end) {
                (Some(w), end) if end.is_none_or(|e| w < e + off) => {
                    let inst = w - off;
                    let second = self.is_second_instance(w, off);
                    if second && self.on_fold == OnFold::First {
                        cur = inst + 1;
                        continue;
                    }
                    return self.within_end(self.occurrence(
                        inst,
                        u8::from(second),
                        false,
                        skipped,
                    ));
                }
                // No match ever after: none in a later segment or gap either.
                (None, _) => return None,
                _ => {}
            }
            let (e, t) = (seg_end?, transition?);
            let off2 = i64::from(t.offset().seconds());
            if off2 > off {
                // A gap: the wall times [e + off, e + off2) do not exist.
                let mut g = self.cron_at_or_after(e + off);
                if g.is_some_and(|g| g < e + off2) {
                    match self.on_gap {
                        OnGap::AfterGap => {
                            return self.within_end(self.occurrence(e, 0, true, skipped));
                        }
                        OnGap::Skip => {
                            while let Some(w) = g.filter(|&w| w < e + off2) {
                                skipped = skipped.saturating_add(1);
                                g = self.cron_at_or_after(w + 1);
                            }
                        }
                    }
                }
            }
            if self.end_ms.is_some_and(|end| e * 1000 > end) {
                return None;
            }
            cur = e;
        }
        None
    }

    fn within_end(&self, o: Occurrence) -> Option<Occurrence> {
        match self.end_ms {
            Some(end) if o.at_ms > end => None,
            _ => Some(o),
        }
    }

    /// Up to `n` occurrences after `after_ms`, in order.
    pub fn upcoming(&self, after_ms: i64, n: usize) -> Vec<Occurrence> {
        let mut out = Vec::with_capacity(n);
        let mut cur = after_ms;
        while out.len() < n {
            let Some(o) = self.next_after(cur) else { break };
            cur = o.at_ms;
            out.push(o);
        }
        out
    }

    /// What fires now. `after_ms`: occurrences at or before it are done (the last fired,
    /// the schedule's set instant, or the previous evaluation's cursor). An occurrence is
    /// due `lead_ms` after its instant (0 in the home region, the failover grace elsewhere)
    /// and late when noticed more than `tolerance_ms` after that. Occurrences more than the
    /// catch-up window before now are missed under every policy and not enumerated.
    pub fn due(&self, after_ms: i64, now_ms: i64, lead_ms: i64, tolerance_ms: i64) -> Due {
        let floor = now_ms
            .saturating_sub(lead_ms)
            .saturating_sub(self.window_ms.max(tolerance_ms));
        let mut cur = after_ms.max(floor.saturating_sub(1));
        let mut due = Due {
            cursor_ms: after_ms,
            ..Due::default()
        };
        let keep_late = match self.missed {
            Missed::Skip => 0,
            Missed::Coalesce => 1,
            Missed::CatchUp => self.catch_up_max,
        };
        let mut late: std::collections::VecDeque<Occurrence> = Default::default();
        let mut on_time = Vec::new();
        for _ in 0..MAX_DUE_PER_EVALUATION {
            let Some(o) = self.next_after(cur) else {
                break;
            };
            if o.at_ms.saturating_add(lead_ms) > now_ms {
                due.next = Some(o);
                break;
            }
            cur = o.at_ms;
            due.cursor_ms = o.at_ms;
            due.dst_skipped += u64::from(o.dst_skipped);
            if now_ms - (o.at_ms + lead_ms) > tolerance_ms {
                late.push_back(o);
                if late.len() > keep_late {
                    late.pop_front();
                    due.missed += 1;
                }
            } else {
                on_time.push(o);
            }
        }
        if due.next.is_none() && due.cursor_ms == cur && cur > after_ms {
            // The cap was reached (or the schedule ended): the next evaluation goes on.
            due.next = self.next_after(cur);
        }
        if self.missed == Missed::Coalesce && !on_time.is_empty() {
            due.missed += late.len() as u64;
            late.clear();
        }
        due.fire = late.into_iter().chain(on_time).collect();
        due
    }
}

fn civil_of(naive: i64) -> Option<jiff::civil::DateTime> {
    Some(
        Timestamp::from_second(naive)
            .ok()?
            .to_zoned(TimeZone::UTC)
            .datetime(),
    )
}

/// The occurrence's id, used as the fired record's event id in every region:
/// `fire:<key>:<UTC instant, RFC 3339>:<fold>`.
pub fn occurrence_id(key: &str, at_ms: i64, fold: u8) -> String {
    let utc = Timestamp::from_millisecond(at_ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| at_ms.to_string());
    format!("fire:{key}:{utc}:{fold}")
}

/// An instant (ms) as RFC 3339 UTC.
pub fn utc(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Parse an RFC 3339 instant ("2027-03-14T07:00:00Z") as ms, for tests and tools.
pub fn instant_ms(s: &str) -> Option<i64> {
    Timestamp::from_str(s).ok().map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(cron: &str, zone: &str) -> ScheduleSpec {
        ScheduleSpec::new(cron, zone, "p")
    }

    fn sched(cron: &str, zone: &str, gap: &str, fold: &str) -> Schedule {
        let mut s = spec(cron, zone);
        s.on_gap = gap.into();
        s.on_fold = fold.into();
        Schedule::parse(&s).unwrap()
    }

    fn ms(s: &str) -> i64 {
        instant_ms(s).unwrap()
    }

    /// (UTC instant, fold, wall) of the occurrences in [from, to).
    fn between(s: &Schedule, from: &str, to: &str) -> Vec<(String, u8, String)> {
        let mut out = Vec::new();
        let mut cur = ms(from) - 1;
        while let Some(o) = s.next_after(cur) {
            if o.at_ms >= ms(to) {
                break;
            }
            cur = o.at_ms;
            out.push((
                Timestamp::from_millisecond(o.at_ms).unwrap().to_string(),
                o.fold,
                o.wall,
            ));
        }
        out
    }

    fn utc(v: &[(String, u8, String)]) -> Vec<&str> {
        v.iter().map(|(u, _, _)| u.as_str()).collect()
    }

    #[test]
    fn new_york_spring_forward() {
        // 2027-03-14 02:00 EST jumps to 03:00 EDT (07:00Z): 02:30 does not exist.
        let skip = sched("30 2 * * *", "America/New_York", "skip", "first");
        let v = between(&skip, "2027-03-13T00:00:00Z", "2027-03-16T00:00:00Z");
        assert_eq!(utc(&v), ["2027-03-13T07:30:00Z", "2027-03-15T06:30:00Z"]);
        assert_eq!(
            skip.next_after(ms("2027-03-14T00:00:00Z"))
                .unwrap()
                .dst_skipped,
            1
        );
        let after = sched("30 2 * * *", "America/New_York", "after_gap", "first");
        let v = between(&after, "2027-03-13T00:00:00Z", "2027-03-16T00:00:00Z");
        assert_eq!(
            v,
            [
                (
                    "2027-03-13T07:30:00Z".into(),
                    0,
                    "2027-03-13T02:30:00-05:00".into()
                ),
                (
                    "2027-03-14T07:00:00Z".into(),
                    0,
                    "2027-03-14T03:00:00-04:00".into()
                ),
                (
                    "2027-03-15T06:30:00Z".into(),
                    0,
                    "2027-03-15T02:30:00-04:00".into()
                ),
            ]
        );
        // Every 15 minutes: the four gap times and 03:00 coalesce into one at 07:00Z.
        let q = sched("*/15 * * * *", "America/New_York", "after_gap", "first");
        let v = between(&q, "2027-03-14T06:30:00Z", "2027-03-14T07:31:00Z");
        assert_eq!(
            utc(&v),
            [
                "2027-03-14T06:30:00Z",
                "2027-03-14T06:45:00Z",
                "2027-03-14T07:00:00Z",
                "2027-03-14T07:15:00Z",
                "2027-03-14T07:30:00Z"
            ]
        );
    }

    #[test]
    fn new_york_fall_back() {
        // 2027-11-07 02:00 EDT falls back to 01:00 EST: 01:30 happens at 05:30Z and 06:30Z.
        let first = sched("30 1 * * *", "America/New_York", "skip", "first");
        let v = between(&first, "2027-11-06T12:00:00Z", "2027-11-08T12:00:00Z");
        assert_eq!(utc(&v), ["2027-11-07T05:30:00Z", "2027-11-08T06:30:00Z"]);
        let both = sched("30 1 * * *", "America/New_York", "skip", "both");
        let v = between(&both, "2027-11-06T12:00:00Z", "2027-11-08T12:00:00Z");
        assert_eq!(
            v,
            [
                (
                    "2027-11-07T05:30:00Z".into(),
                    0,
                    "2027-11-07T01:30:00-04:00".into()
                ),
                (
                    "2027-11-07T06:30:00Z".into(),
                    1,
                    "2027-11-07T01:30:00-05:00".into()
                ),
                (
                    "2027-11-08T06:30:00Z".into(),
                    0,
                    "2027-11-08T01:30:00-05:00".into()
                ),
            ]
        );
        // Every 20 minutes through the fold, both: strictly increasing, each instant once.
        let q = sched("*/20 * * * *", "America/New_York", "skip", "both");
        let v = between(&q, "2027-11-07T05:00:00Z", "2027-11-07T07:00:00Z");
        assert_eq!(v.len(), 6, "{v:?}");
        let f = sched("*/20 * * * *", "America/New_York", "skip", "first");
        let v = between(&f, "2027-11-07T05:00:00Z", "2027-11-07T07:00:00Z");
        // 01:00, 01:20, 01:40 EDT, then nothing until 02:00 EST (07:00Z).
        assert_eq!(
            utc(&v),
            [
                "2027-11-07T05:00:00Z",
                "2027-11-07T05:20:00Z",
                "2027-11-07T05:40:00Z"
            ]
        );
    }

    #[test]
    fn london() {
        // 2027-03-28 01:00 GMT → 02:00 BST; 2027-10-31 02:00 BST → 01:00 GMT.
        let s = sched("30 1 * * *", "Europe/London", "skip", "both");
        let v = between(&s, "2027-03-27T00:00:00Z", "2027-03-30T00:00:00Z");
        assert_eq!(utc(&v), ["2027-03-27T01:30:00Z", "2027-03-29T00:30:00Z"]);
        let v = between(&s, "2027-10-30T12:00:00Z", "2027-11-01T12:00:00Z");
        assert_eq!(
            utc(&v),
            [
                "2027-10-31T00:30:00Z",
                "2027-10-31T01:30:00Z",
                "2027-11-01T01:30:00Z"
            ]
        );
        assert_eq!(v[1].1, 1);
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        // Lord Howe moves by 30 minutes: 2027-04-04 02:00 (+11) → 01:30 (+10:30), at
        // 2027-04-03T15:00Z; 2027-10-03 02:00 (+10:30) → 02:30 (+11), at 15:30Z the day before.
        let s = sched("45 1 * * *", "Australia/Lord_Howe", "after_gap", "both");
        let v = between(&s, "2027-04-02T12:00:00Z", "2027-04-05T12:00:00Z");
        assert_eq!(
            v,
            [
                (
                    "2027-04-02T14:45:00Z".into(),
                    0,
                    "2027-04-03T01:45:00+11:00".into()
                ),
                (
                    "2027-04-03T14:45:00Z".into(),
                    0,
                    "2027-04-04T01:45:00+11:00".into()
                ),
                (
                    "2027-04-03T15:15:00Z".into(),
                    1,
                    "2027-04-04T01:45:00+10:30".into()
                ),
                (
                    "2027-04-04T15:15:00Z".into(),
                    0,
                    "2027-04-05T01:45:00+10:30".into()
                ),
            ]
        );
        let g = sched("15 2 * * *", "Australia/Lord_Howe", "after_gap", "first");
        let v = between(&g, "2027-10-01T12:00:00Z", "2027-10-04T12:00:00Z");
        assert_eq!(
            v,
            [
                (
                    "2027-10-01T15:45:00Z".into(),
                    0,
                    "2027-10-02T02:15:00+10:30".into()
                ),
                (
                    "2027-10-02T15:30:00Z".into(),
                    0,
                    "2027-10-03T02:30:00+11:00".into()
                ),
                (
                    "2027-10-03T15:15:00Z".into(),
                    0,
                    "2027-10-04T02:15:00+11:00".into()
                ),
            ]
        );
    }

    #[test]
    fn kolkata_half_hour_offset_no_dst() {
        let s = sched("0 9 * * *", "Asia/Kolkata", "skip", "first");
        let v = between(&s, "2027-03-13T00:00:00Z", "2027-03-15T00:00:00Z");
        assert_eq!(
            v,
            [
                (
                    "2027-03-13T03:30:00Z".into(),
                    0,
                    "2027-03-13T09:00:00+05:30".into()
                ),
                (
                    "2027-03-14T03:30:00Z".into(),
                    0,
                    "2027-03-14T09:00:00+05:30".into()
                ),
            ]
        );
    }

    #[test]
    fn twenty_ninth_of_february() {
        let s = sched("0 12 29 2 *", "Europe/Paris", "skip", "first");
        let o = s.next_after(ms("2025-03-01T00:00:00Z")).unwrap();
        assert_eq!(o.wall, "2028-02-29T12:00:00+01:00");
        let o = s.next_after(o.at_ms).unwrap();
        assert_eq!(o.wall, "2032-02-29T12:00:00+01:00");
        // 2100 is not a leap year.
        let o = s.next_after(ms("2096-03-01T00:00:00Z")).unwrap();
        assert_eq!(o.wall, "2104-02-29T12:00:00+01:00");
    }

    #[test]
    fn seconds_field_start_and_end() {
        let mut sp = spec("30 */10 * * * *", "UTC");
        sp.start_ms = Some(ms("2027-01-01T00:05:00Z"));
        sp.end_ms = Some(ms("2027-01-01T00:40:30Z"));
        let s = Schedule::parse(&sp).unwrap();
        let v = between(&s, "2026-12-31T00:00:00Z", "2027-01-02T00:00:00Z");
        assert_eq!(
            utc(&v),
            [
                "2027-01-01T00:10:30Z",
                "2027-01-01T00:20:30Z",
                "2027-01-01T00:30:30Z",
                "2027-01-01T00:40:30Z"
            ]
        );
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let bad = |f: &dyn Fn(&mut ScheduleSpec), field: &str| {
            let mut s = spec("0 9 * * *", "Asia/Kolkata");
            f(&mut s);
            let e = Schedule::parse(&s).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        };
        bad(&|s| s.cron = "0 9 * *".into(), "cron");
        bad(&|s| s.cron = "0 9 * * * * 2027".into(), "cron");
        bad(&|s| s.cron = "61 9 * * *".into(), "cron");
        bad(&|s| s.cron = "x y z a b".into(), "cron");
        bad(&|s| s.zone = "Mars/Olympus_Mons".into(), "zone");
        bad(&|s| s.zone = String::new(), "zone");
        bad(&|s| s.on_gap = "later".into(), "on_gap");
        bad(&|s| s.on_fold = "twice".into(), "on_fold");
        bad(&|s| s.missed = "all".into(), "missed");
        bad(&|s| s.catch_up_max = 0, "catch_up_max");
        bad(&|s| s.catch_up_window_ms = -1, "catch_up_window_ms");
        bad(
            &|s| {
                s.start_ms = Some(2);
                s.end_ms = Some(1)
            },
            "start_ms",
        );
    }

    #[test]
    fn missed_policies() {
        let hourly = |missed: &str, max: i32| {
            let mut s = spec("0 * * * *", "UTC");
            s.missed = missed.into();
            s.catch_up_max = max;
            Schedule::parse(&s).unwrap()
        };
        let t0 = ms("2027-01-01T00:00:00Z");
        let h = 3_600_000;
        // Last fired at 00:00; noticed at 05:00:10 (10 s after 05:00, tolerance 60 s): 01..04
        // are late, 05 is on time.
        let now = t0 + 5 * h + 10_000;
        let at = |d: &Due| {
            d.fire
                .iter()
                .map(|o| (o.at_ms - t0) / h)
                .collect::<Vec<_>>()
        };
        let d = hourly("skip", 1).due(t0, now, 0, 60_000);
        assert_eq!((at(&d), d.missed), (vec![5], 4));
        let d = hourly("coalesce", 1).due(t0, now, 0, 60_000);
        assert_eq!((at(&d), d.missed), (vec![5], 4));
        let d = hourly("catch_up", 2).due(t0, now, 0, 60_000);
        assert_eq!((at(&d), d.missed), (vec![3, 4, 5], 2));
        assert_eq!(d.next.unwrap().at_ms, t0 + 6 * h);
        assert_eq!(d.cursor_ms, t0 + 5 * h);
        // Noticed at 05:30: nothing on time; coalesce fires 05 alone.
        let now = t0 + 5 * h + h / 2;
        let d = hourly("coalesce", 1).due(t0, now, 0, 60_000);
        assert_eq!((at(&d), d.missed), (vec![5], 4));
        let d = hourly("skip", 1).due(t0, now, 0, 60_000);
        assert_eq!((at(&d), d.missed), (vec![], 5));
        // A failover region's lead moves every deadline: at 05:00:10 with a 30 min grace,
        // 05 is not due yet.
        let d = hourly("catch_up", 10).due(t0, t0 + 5 * h + 10_000, h / 2, 60_000);
        assert_eq!(at(&d), vec![1, 2, 3, 4]);
        assert_eq!(d.next.unwrap().at_ms, t0 + 5 * h);
        // Older than the catch-up window (1 day by default): not enumerated at all.
        let d = hourly("catch_up", 100).due(t0, t0 + 72 * h, 0, 60_000);
        // 48 h (the window's floor) to 72 h (on time).
        assert_eq!(at(&d), (48..=72).collect::<Vec<_>>());
    }

    #[test]
    fn occurrence_ids() {
        assert_eq!(
            occurrence_id("r:1", ms("2027-11-07T06:30:00Z"), 1),
            "fire:r:1:2027-11-07T06:30:00Z:1"
        );
    }

    const ZONES: [&str; 6] = [
        "America/New_York",
        "Europe/London",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "Europe/Paris",
        "UTC",
    ];
    const CRONS: [&str; 6] = [
        "*/15 * * * *",
        "30 1 * * *",
        "45 2 * * *",
        "0 */3 * * 1-5",
        "20 0,1,2,3 * * *",
        "0 30 2 * * *",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Occurrences strictly increase; none is at or before the evaluation start; and the
        /// answer does not depend on where the evaluation started.
        #[test]
        fn occurrences_increase_and_do_not_depend_on_the_start(
            z in 0..ZONES.len(), c in 0..CRONS.len(), gap in any::<bool>(), both in any::<bool>(),
            // Around 2027's transitions in every zone above (March, April, October, November).
            start in 1_798_761_600_000i64..1_830_297_600_000i64,
            jump in 1i64..86_400_000 * 3,
        ) {
            let s = sched(CRONS[c], ZONES[z], if gap { "skip" } else { "after_gap" }, if both { "both" } else { "first" });
            let from_start = s.upcoming(start, 40);
            for w in from_start.windows(2) {
                prop_assert!(w[0].at_ms < w[1].at_ms);
            }
            if let Some(f) = from_start.first() {
                prop_assert!(f.at_ms > start);
                prop_assert_eq!(f.at_ms % 1000, 0);
            }
            // Starting later, at any instant: the same sequence from there on.
            let later = start + jump;
            let from_later = s.upcoming(later, 20);
            let expected: Vec<i64> = from_start.iter().map(|o| o.at_ms).filter(|&t| t > later).collect();
            let got: Vec<i64> = from_later.iter().map(|o| o.at_ms).take(expected.len()).collect();
            prop_assert_eq!(&got[..], &expected[..got.len().min(expected.len())]);
            // Due never fires anything not yet due, nor twice.
            let now = start + jump;
            let d = s.due(start, now, 0, 60_000);
            for o in &d.fire {
                prop_assert!(o.at_ms <= now && o.at_ms > start);
            }
            if let Some(n) = &d.next {
                prop_assert!(n.at_ms > now);
            }
        }
    }
}
