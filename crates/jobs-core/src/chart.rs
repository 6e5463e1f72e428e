//! Failures over time (docs/spec.md §22): the events of a user's last 24 hours, counted per
//! hour by kind and, for failures, by cause. Pure: the store reads the events, this counts them.

use std::collections::HashMap;

use mongodb::bson::DateTime;
use serde::Serialize;

use crate::error_groups::Cause;
use crate::task::rfc3339;

/// Hours the chart covers.
pub const HOURS: i64 = 24;
/// Causes the chart shows by name; the rest are counted together as `other`.
pub const TOP_GROUPS: usize = 5;
const HOUR_MS: i64 = 3_600_000;

/// One event the chart counts, as read.
#[derive(Debug, Clone)]
pub struct ChartEvent {
    /// When it happened.
    pub at: DateTime,
    /// What it counts as.
    pub kind: Counted,
}

/// What an event counts as.
#[derive(Debug, Clone, PartialEq)]
pub enum Counted {
    /// A failure (`failed`, `swept`, `deliveryFailed`): its cause's group as the event keeps it
    /// (the group of the whole message; absent on events older than that), and its message.
    Failure {
        /// The group the event keeps.
        group: Option<String>,
        /// The message as stored.
        message: String,
    },
    /// A retry: manual or bulk (`retried`), or automatic (`scheduled`).
    Retry,
    /// A task completed after at least one retry.
    Recovery,
}

/// `failures`: the last 24 hours, oldest hour first.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailuresOverTime {
    /// `since`: the start of the first hour, RFC 3339.
    pub since: String,
    /// `groups`: the causes shown by name, most failures first: `{errorGroup, template,
    /// count}`; failures of any other cause are in each hour's `other`.
    pub groups: Vec<ChartGroup>,
    /// `hours`: 24 of them.
    pub hours: Vec<Hour>,
    /// `truncated`: the day held more events than one answer reads (the newest are counted).
    pub truncated: bool,
}

/// A cause shown by name.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChartGroup {
    /// `errorGroup`.
    pub error_group: String,
    /// `template`.
    pub template: String,
    /// `count`: its failures in the 24 hours.
    pub count: i64,
}

/// One hour.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hour {
    /// `start`: RFC 3339.
    pub start: String,
    /// `failures`: per shown cause, in the order of `groups`.
    pub failures: Vec<i64>,
    /// `other`: failures of the other causes.
    pub other: i64,
    /// `retries`.
    pub retries: i64,
    /// `recoveries`: tasks completed after a retry.
    pub recoveries: i64,
}

impl FailuresOverTime {
    /// The chart of `events` over the 24 whole hours that end with the one holding `now`;
    /// `truncated` when they are not all the day's.
    pub fn of(now: DateTime, events: &[ChartEvent], truncated: bool) -> Self {
        let first = (now.timestamp_millis() / HOUR_MS - (HOURS - 1)) * HOUR_MS;
        let hour_of = |at: DateTime| {
            let offset = at.timestamp_millis() - first;
            (0..HOURS * HOUR_MS)
                .contains(&offset)
                .then_some((offset / HOUR_MS) as usize)
        };
        let mut causes: HashMap<String, (String, i64)> = HashMap::new();
        let mut counted: Vec<(usize, Option<String>, &Counted)> = Vec::new();
        for event in events {
            let Some(hour) = hour_of(event.at) else {
                continue;
            };
            let group = match &event.kind {
                Counted::Failure { group, message } => {
                    let group = match group {
                        Some(group) => group.clone(),
                        None => Cause::of(message).group,
                    };
                    let entry = causes
                        .entry(group.clone())
                        .or_insert_with(|| (Cause::of(message).template, 0));
                    entry.1 += 1;
                    Some(group)
                }
                _ => None,
            };
            counted.push((hour, group, &event.kind));
        }
        let mut ranked: Vec<(String, String, i64)> =
            causes.into_iter().map(|(g, (t, n))| (g, t, n)).collect();
        ranked.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        ranked.truncate(TOP_GROUPS);
        let mut hours: Vec<Hour> = (0..HOURS)
            .map(|h| Hour {
                start: rfc3339(DateTime::from_millis(first + h * HOUR_MS)),
                failures: vec![0; ranked.len()],
                other: 0,
                retries: 0,
                recoveries: 0,
            })
            .collect();
        for (hour, group, kind) in counted {
            let hour = &mut hours[hour];
            match kind {
                Counted::Failure { .. } => {
                    match ranked.iter().position(|r| Some(&r.0) == group.as_ref()) {
                        Some(shown) => hour.failures[shown] += 1,
                        None => hour.other += 1,
                    }
                }
                Counted::Retry => hour.retries += 1,
                Counted::Recovery => hour.recoveries += 1,
            }
        }
        Self {
            since: rfc3339(DateTime::from_millis(first)),
            groups: ranked
                .into_iter()
                .map(|(error_group, template, count)| ChartGroup {
                    error_group,
                    template,
                    count,
                })
                .collect(),
            hours,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_per_hour_by_kind_and_cause() {
        let now = DateTime::from_millis(100 * HOUR_MS + 1_800_000); // half past hour 100
        let at =
            |hours_ago: i64| DateTime::from_millis(now.timestamp_millis() - hours_ago * HOUR_MS);
        let failure = |m: &str, h| ChartEvent {
            at: at(h),
            kind: Counted::Failure {
                group: None,
                message: m.into(),
            },
        };
        let mut events = vec![
            failure("timeout after 30 s", 0),
            failure("timeout after 12 s", 0),
            failure("HTTP 500 from api", 2),
            ChartEvent {
                at: at(0),
                kind: Counted::Retry,
            },
            ChartEvent {
                at: at(0),
                kind: Counted::Recovery,
            },
            failure("too old to count", 24),
            // A long message's group is the event's (its whole message's), not its cut text's.
            ChartEvent {
                at: at(0),
                kind: Counted::Failure {
                    group: Some(Cause::of("timeout after 30 s").group),
                    message: "timeout after 30 s… (cut at 2000 characters)".into(),
                },
            },
        ];
        for n in 0..6 {
            events.push(failure(&format!("rare cause {n} {}", "x".repeat(n)), 1));
        }
        let chart = FailuresOverTime::of(now, &events, false);
        assert_eq!(chart.hours.len(), 24);
        assert_eq!(chart.since, rfc3339(DateTime::from_millis(77 * HOUR_MS)));
        assert_eq!(chart.groups[0].template, "timeout after <n> s");
        assert_eq!(chart.groups[0].count, 3);
        assert_eq!(chart.groups.len(), TOP_GROUPS);
        let last = chart.hours.last().unwrap();
        assert_eq!((last.failures[0], last.retries, last.recoveries), (3, 1, 1));
        let total: i64 = chart
            .hours
            .iter()
            .map(|h| h.failures.iter().sum::<i64>() + h.other)
            .sum();
        assert_eq!(total, 10, "the 24-hour-old failure is outside");
        assert!(
            chart.hours[22].other > 0,
            "causes beyond the top {TOP_GROUPS} are other"
        );
    }
}
