//! When the source lists its files: every so often, or at the minutes a
//! cron expression names (UTC). Pure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, ErrorKind, Result};

/// When a [`ParquetSource`](super::ParquetSource) lists its files (always
/// once when its stream starts, then on this schedule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every this long.
    Every(Duration),
    /// At the minutes a cron expression names.
    Cron(CronSchedule),
}

impl Schedule {
    /// The first listing time after `now`.
    pub fn next_after(&self, now: SystemTime) -> SystemTime {
        match self {
            Schedule::Every(interval) => now + *interval,
            Schedule::Cron(cron) => cron.next_after(now),
        }
    }
}

/// A five-field cron expression, `minute hour day-of-month month
/// day-of-week`, in UTC. Each field is `*`, a number, a range `a-b`, any
/// of these with a step (`*/15`, `0-30/10`), or a comma-separated list of
/// them; day of week 0 or 7 is Sunday. As in cron, when both day fields
/// are restricted a day matching either runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronSchedule {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    any_day: bool,
    any_weekday: bool,
}

impl CronSchedule {
    /// Parses `expression`; the error names the field that is wrong.
    pub fn parse(expression: &str) -> Result<Self> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let bad = |why: String| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "cron expression {expression:?}: {why}; write five fields, minute hour day-of-month month \
                     day-of-week, such as \"*/15 * * * *\""
                ),
            )
        };
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(bad(format!("it has {} fields", fields.len())));
        };
        let field = |text: &str, name: &str, min: u32, max: u32| {
            parse_field(text, min, max)
                .map_err(|why| bad(format!("the {name} field {text:?} {why}")))
        };
        let weekdays = field(weekday, "day-of-week", 0, 7)?;
        Ok(Self {
            text: expression.to_owned(),
            minutes: field(minute, "minute", 0, 59)?,
            hours: field(hour, "hour", 0, 23)? as u32,
            days: field(day, "day-of-month", 1, 31)? as u32,
            months: field(month, "month", 1, 12)? as u16,
            // 7 is Sunday too.
            weekdays: ((weekdays | (weekdays >> 7)) & 0x7F) as u8,
            any_day: day.starts_with('*'),
            any_weekday: weekday.starts_with('*'),
        })
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => by_day || by_weekday,
            _ => by_day && by_weekday,
        }
    }

    /// The first whole minute after `now` that the expression names.
    pub fn next_after(&self, now: SystemTime) -> SystemTime {
        let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut minute = seconds / 60 + 1;
        // Eight years cover every day-of-month and weekday combination
        // (29 February on a given weekday included).
        let limit = minute + 8 * 366 * 24 * 60;
        while minute < limit {
            let days = minute / (24 * 60);
            let (_, month, day) = civil_from_days(days as i64);
            let weekday = ((days + 4) % 7) as u32;
            if self.months & (1 << month) == 0 || !self.day_matches(day, weekday) {
                minute = (days + 1) * 24 * 60;
                continue;
            }
            let hour = ((minute / 60) % 24) as u32;
            if self.hours & (1 << hour) == 0 {
                minute = (minute / 60 + 1) * 60;
                continue;
            }
            if self.minutes & (1 << (minute % 60)) != 0 {
                return UNIX_EPOCH + Duration::from_secs(minute * 60);
            }
            minute += 1;
        }
        // Only an impossible date (30 February) gets here: never run.
        UNIX_EPOCH + Duration::from_secs(limit * 60)
    }
}

/// The bits of the values a field names, in `min..=max`.
fn parse_field(text: &str, min: u32, max: u32) -> std::result::Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("has a step {step:?} that is not a number"))?;
                if step == 0 {
                    return Err("has a step of 0".to_owned());
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            (number(low, min, max)?, number(high, min, max)?)
        } else {
            let value = number(range, min, max)?;
            (value, if part.contains('/') { max } else { value })
        };
        if low > high {
            return Err(format!("has the range {low}-{high}, which is empty"));
        }
        for value in (low..=high).step_by(step as usize) {
            bits |= 1 << value;
        }
    }
    Ok(bits)
}

fn number(text: &str, min: u32, max: u32) -> std::result::Result<u32, String> {
    let value: u32 = text
        .parse()
        .map_err(|_| format!("has {text:?}, which is not a number (names are not supported)"))?;
    if !(min..=max).contains(&value) {
        return Err(format!("has {value}, outside {min}-{max}"));
    }
    Ok(value)
}

/// Year, month (1–12) and day (1–31) of a day count since 1970-01-01
/// (the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since 1970 of a UTC date and time.
    fn at(days_since_epoch: u64, hour: u64, minute: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(days_since_epoch * 86_400 + hour * 3600 + minute * 60)
    }

    // 2026-12-07 is day 20_794 since 1970, a Monday.
    const MONDAY: u64 = 20_794;

    #[test]
    fn calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(MONDAY as i64), (2026, 12, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn next_minutes() {
        let every_15 = CronSchedule::parse("*/15 * * * *").unwrap();
        assert_eq!(every_15.next_after(at(MONDAY, 10, 7)), at(MONDAY, 10, 15));
        assert_eq!(every_15.next_after(at(MONDAY, 10, 45)), at(MONDAY, 11, 0));
        let nightly = CronSchedule::parse("30 2 * * *").unwrap();
        assert_eq!(nightly.next_after(at(MONDAY, 10, 0)), at(MONDAY + 1, 2, 30));
        // Weekdays at 09:00 and 17:00: from Friday evening to Monday.
        let office = CronSchedule::parse("0 9,17 * * 1-5").unwrap();
        assert_eq!(
            office.next_after(at(MONDAY + 4, 17, 0)),
            at(MONDAY + 7, 9, 0)
        );
        // Sundays as 7.
        let sunday = CronSchedule::parse("0 0 * * 7").unwrap();
        assert_eq!(sunday.next_after(at(MONDAY, 0, 0)), at(MONDAY + 6, 0, 0));
        // The 1st of the month or any Monday (both day fields restricted).
        let either = CronSchedule::parse("0 12 1 * 1").unwrap();
        assert_eq!(
            either.next_after(at(MONDAY + 1, 0, 0)),
            at(MONDAY + 7, 12, 0)
        );
        assert_eq!(
            either.next_after(at(MONDAY + 20, 0, 0)),
            at(MONDAY + 21, 12, 0)
        );
        assert_eq!(
            either.next_after(at(MONDAY + 22, 0, 0)),
            at(MONDAY + 25, 12, 0)
        );
        // Leap days only.
        let leap = CronSchedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(leap.next_after(at(MONDAY, 0, 0)), at(21_243, 0, 0));
        assert_eq!(civil_from_days(21_243), (2028, 2, 29));
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (text, expected) in [
            ("* * * *", "4 fields"),
            ("60 * * * *", "minute field \"60\" has 60, outside 0-59"),
            ("* * * JAN *", "month field \"JAN\""),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "empty"),
        ] {
            let error = CronSchedule::parse(text).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config);
            assert!(error.message().contains(expected), "{text}: {error}");
        }
    }
}
