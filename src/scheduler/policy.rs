//! The scheduling policy on plain data: which candidate serves, and how an upstream answer
//! changes an account's health. Stores call these inside their atomic pick (the embedded store
//! directly; the Redis scripts mirror them line for line), so the policy is written and tested
//! once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An account's health as the scheduler last judged it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: Status,
    /// Until when (unix ms) a rate limit or cooldown lasts; 0 when none.
    pub until: i64,
    /// Rate limits for one model family only: family → until (unix ms).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub family_until: BTreeMap<String, i64>,
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix ms of `last_error`; 0 when none.
    pub last_error_at: i64,
    /// Until when (unix ms) the account rests for a spent budget of its own (`crate::budget`);
    /// 0 when none. Apart from the vendor's verdicts above: neither lifts the other.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub budget_until: i64,
    /// Which budget, and what was spent of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_reason: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Ok,
    RateLimited,
    CoolingDown,
    /// Out of rotation until an admin resets it.
    Unauthorized,
}

/// What an upstream answer did to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// It answered: a failure streak (and the cooldown it caused) ends, unless an error came
    /// after the request was sent (`sent_at`, unix ms): its success says nothing of that.
    Success {
        sent_at: i64,
    },
    /// 429: out until `until`, for one model family when `family` is set.
    RateLimited {
        until: i64,
        family: Option<String>,
        error: String,
    },
    /// 529: cooling down until `until`.
    Overloaded {
        until: i64,
        error: String,
    },
    /// 5xx, connect error, timeout: cooling down `base_ms × 2^(n-1)` (at most `max_ms`) after the
    /// n-th consecutive failure.
    Failure {
        base_ms: u64,
        max_ms: u64,
        error: String,
    },
    Unauthorized {
        error: String,
    },
    /// A budget of the account is spent: out until `until` (a later end already set stays).
    BudgetSpent {
        until: i64,
        reason: String,
    },
    /// The account's budgets were reviewed: out for them until `until` (0: not out), in place
    /// of what they had set, if that is still `was` (else nothing: a report made meanwhile,
    /// which the review reads again).
    BudgetSet {
        until: i64,
        reason: Option<String>,
        was: i64,
    },
    /// An admin's reset (or a new credential): the vendor's verdicts and the failure streak
    /// are gone; a spent budget's rest stays.
    Cleared,
}

impl Health {
    /// The status as it reads at `now`: a rate limit or cooldown that has passed reads as `Ok`.
    pub fn status_at(&self, now: i64) -> Status {
        match self.status {
            Status::RateLimited | Status::CoolingDown if self.until <= now => Status::Ok,
            s => s,
        }
    }

    /// Whether nothing is in force and no failure streak runs: a success would change nothing,
    /// so none is reported (`Picked::Account::degraded` is the opposite). The last error is
    /// history for the admin's view and does not count.
    pub fn is_clean(&self) -> bool {
        self.is_clean_for(None) && self.family_until.is_empty()
    }

    /// As [`Health::is_clean`] for a request of `family`: another family's (or model's) limit
    /// does not count, since this request's success would not lift it. An account with a limit
    /// on one model goes on serving the others without a report after each.
    pub fn is_clean_for(&self, family: Option<&str>) -> bool {
        self.status == Status::Ok
            && self.until == 0
            && family.is_none_or(|f| !self.family_until.contains_key(f))
            && self.consecutive_failures == 0
    }

    /// Whether the account may serve a request for `family` at `now`.
    pub fn can_serve(&self, family: Option<&str>, now: i64) -> bool {
        self.status_at(now) == Status::Ok
            && family.is_none_or(|f| self.family_until.get(f).is_none_or(|&u| u <= now))
            && self.budget_until <= now
    }

    /// Whether a spent budget keeps the account out at `now`.
    pub fn budget_spent_at(&self, now: i64) -> bool {
        self.budget_until > now
    }

    /// When the account can serve `family` again on its own; `None` if it needs an admin.
    pub fn recovers_at(&self, family: Option<&str>, now: i64) -> Option<i64> {
        let general = match self.status_at(now) {
            Status::Ok => now,
            Status::RateLimited | Status::CoolingDown => self.until,
            Status::Unauthorized => return None,
        };
        let family = family
            .and_then(|f| self.family_until.get(f))
            .copied()
            .unwrap_or(now);
        Some(general.max(family).max(self.budget_until))
    }

    /// Applies one report.
    pub fn apply(&mut self, report: &Report, now: i64) {
        match report {
            // Sent before the last error (a long answer, while the account ran out of credit or
            // failed): no word on the account since, and no lifting what that error put in force.
            Report::Success { sent_at } if *sent_at < self.last_error_at => {
                self.family_until.retain(|_, u| *u > now);
            }
            Report::Success { .. } => {
                self.consecutive_failures = 0;
                // A success ends a failure cooldown, and clears a rate limit that has run out; one
                // still in force runs until its reset (a request that started before the limit
                // may still finish well).
                if self.status == Status::CoolingDown || self.status_at(now) == Status::Ok {
                    self.status = Status::Ok;
                    self.until = 0;
                }
                self.family_until.retain(|_, u| *u > now);
            }
            Report::RateLimited {
                until,
                family: Some(f),
                error,
            } => {
                let slot = self.family_until.entry(f.clone()).or_insert(0);
                *slot = (*slot).max(*until);
                self.family_until.retain(|_, u| *u > now);
                self.note(error, now);
            }
            Report::RateLimited {
                until,
                family: None,
                error,
            } => {
                self.escalate(Status::RateLimited, *until, now);
                self.note(error, now);
            }
            Report::Overloaded { until, error } => {
                self.escalate(Status::CoolingDown, *until, now);
                self.note(error, now);
            }
            Report::Failure {
                base_ms,
                max_ms,
                error,
            } => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let shift = self.consecutive_failures.saturating_sub(1).min(20);
                let cooldown = base_ms.saturating_mul(1u64 << shift).min(*max_ms);
                let until = now.saturating_add(i64::try_from(cooldown).unwrap_or(i64::MAX));
                self.escalate(Status::CoolingDown, until, now);
                self.note(error, now);
            }
            Report::Unauthorized { error } => {
                self.status = Status::Unauthorized;
                self.until = 0;
                self.note(error, now);
            }
            Report::BudgetSpent { until, reason } => {
                if *until > self.budget_until {
                    self.budget_until = *until;
                    self.budget_reason = Some(reason.clone());
                }
            }
            Report::BudgetSet { until, reason, was } => {
                if self.budget_until == *was {
                    self.budget_until = *until;
                    self.budget_reason = reason.clone().filter(|_| *until > 0);
                }
            }
            Report::Cleared => {
                *self = Health {
                    budget_until: self.budget_until,
                    budget_reason: self.budget_reason.take(),
                    ..Health::default()
                };
            }
        }
    }

    /// Moves to `status` until `until`, never shortening a longer exclusion already in force and
    /// never lifting an unauthorized account.
    fn escalate(&mut self, status: Status, until: i64, now: i64) {
        if self.status == Status::Unauthorized {
            return;
        }
        if self.status_at(now) == Status::Ok || until >= self.until {
            self.status = status;
            self.until = until.max(now);
        }
    }

    fn note(&mut self, error: &str, now: i64) {
        self.last_error = Some(error.chars().take(500).collect());
        self.last_error_at = now;
    }
}

/// One candidate as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Contender<'a> {
    pub id: &'a str,
    pub priority: i32,
    pub max_concurrency: Option<u32>,
    pub weight: u32,
    /// `store::Candidate::serves`.
    pub serves: bool,
    pub in_flight: u32,
    /// Increases with every pick of any account: lower was picked longer ago (0: never).
    pub pick_seq: u64,
    pub health: &'a Health,
}

/// Capacity assumed for an account without a concurrency cap, when comparing loads.
const UNCAPPED: u64 = 1_000;

impl Contender<'_> {
    fn eligible(&self, family: Option<&str>, now: i64) -> bool {
        self.serves
            && self.max_concurrency.is_none_or(|cap| self.in_flight < cap)
            && self.health.can_serve(family, now)
    }

    /// A candidate only so that a session bound to it is recognised (tried by this request, or
    /// not serving its model): it never frees up for this request. `take.lua`'s caps 0 and -2.
    fn no_capacity(&self) -> bool {
        !self.serves || self.max_concurrency == Some(0)
    }

    /// In-flight requests relative to capacity (cap × weight), in millionths.
    fn load(&self) -> u64 {
        let cap = self.max_concurrency.map_or(UNCAPPED, u64::from).max(1);
        let capacity = cap.saturating_mul(u64::from(self.weight.max(1)));
        u64::from(self.in_flight).saturating_mul(1_000_000) / capacity
    }
}

/// The outcome of a choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<'a> {
    /// This account serves; `sticky` says how the session binding fared.
    Take { id: &'a str, sticky: Sticky },
    /// None can serve now; the earliest a candidate recovers on its own (unix ms).
    Unavailable { retry_at: Option<i64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// The request has no session.
    None,
    /// The session's bound account served.
    Hit,
    /// The session had no binding; it is now bound to the chosen account.
    Bound,
    /// The bound account could not serve; this request went elsewhere, the binding stays.
    Escaped,
    /// The bound account could not serve; the binding moved to the chosen account.
    Moved,
}

/// What a session does when its bound account cannot serve now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// This request goes elsewhere; the binding stays.
    Escape,
    /// The binding moves to the account chosen.
    Move,
    /// The request waits for the bound account (what it names lives there only: a stored
    /// response), unless that account was tried by this request or never comes back on its own
    /// (then it escapes).
    Wait,
}

/// Chooses among `options` for a request of model `family`, preferring the session's `bound`
/// account. `session` says whether the request has a session and what an overflow does.
pub fn choose<'a>(
    options: &[Contender<'a>],
    family: Option<&str>,
    now: i64,
    session: Option<(Option<&str>, Overflow)>,
) -> Choice<'a> {
    // A full but healthy account frees up when a request ends: soon, not knowable.
    let frees_at = |at: i64| if at <= now { now + 1_000 } else { at };
    // The session's bound account, when it is among the options.
    let bound = session
        .and_then(|(b, _)| b)
        .and_then(|b| options.iter().find(|o| o.id == b));
    if let Some(o) = bound {
        if o.eligible(family, now) {
            return Choice::Take {
                id: o.id,
                sticky: Sticky::Hit,
            };
        }
        if let Some((_, Overflow::Wait)) = session {
            // Tried by this request: nothing to wait for (the caller answers with its failure).
            if o.no_capacity() {
                return Choice::Unavailable { retry_at: None };
            }
            if let Some(at) = o.health.recovers_at(family, now) {
                return Choice::Unavailable {
                    retry_at: Some(frees_at(at)),
                };
            }
        }
    }
    let best = options
        .iter()
        .filter(|o| o.eligible(family, now))
        .min_by_key(|o| (o.priority, o.load(), o.pick_seq));
    let Some(best) = best else {
        // A candidate without capacity (tried by this request) never frees up for it.
        let retry_at = options
            .iter()
            .filter(|o| !o.no_capacity())
            .filter_map(|o| o.health.recovers_at(family, now).map(frees_at))
            .min();
        return Choice::Unavailable { retry_at };
    };
    let sticky = match session {
        None => Sticky::None,
        Some((None, _)) => Sticky::Bound,
        // Bound to an account that does not serve this model: it still serves the session's
        // other requests, which it keeps.
        Some((Some(_), _)) if bound.is_some_and(|b| !b.serves) => Sticky::Escaped,
        Some((Some(_), Overflow::Move)) => Sticky::Moved,
        // Bound to an account no longer among the options: bound anew.
        Some((Some(_), _)) if bound.is_none() => Sticky::Bound,
        Some((Some(_), _)) => Sticky::Escaped,
    };
    Choice::Take {
        id: best.id,
        sticky,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    /// A spent budget keeps the account out until its end, apart from the vendor's verdicts:
    /// a success does not lift it, a rate limit does not touch it, a change of the budget sets
    /// it exactly (lowering it too) and lifts nothing else.
    #[test]
    fn a_budgets_rest_is_its_own() {
        let mut h = Health::default();
        let spent = |until| Report::BudgetSpent {
            until,
            reason: "daily".into(),
        };
        h.apply(&spent(NOW + 500), NOW);
        assert!(!h.can_serve(None, NOW));
        assert!(h.can_serve(None, NOW + 500));
        assert_eq!(h.recovers_at(Some("opus"), NOW), Some(NOW + 500));
        h.apply(&Report::Success { sent_at: NOW }, NOW);
        assert!(!h.can_serve(None, NOW), "a success does not lift it");
        h.apply(&spent(NOW + 100), NOW);
        assert_eq!(
            h.budget_until,
            NOW + 500,
            "a shorter one does not shorten it"
        );
        h.apply(
            &Report::RateLimited {
                until: NOW + 900,
                family: None,
                error: "429".into(),
            },
            NOW,
        );
        assert_eq!((h.budget_until, h.until), (NOW + 500, NOW + 900));
        assert_eq!(h.budget_reason.as_deref(), Some("daily"));
        let lift = |was| Report::BudgetSet {
            until: 0,
            reason: None,
            was,
        };
        h.apply(&lift(NOW + 1), NOW);
        assert_eq!(
            h.budget_until,
            NOW + 500,
            "set over another rest than it read: nothing"
        );
        h.apply(&lift(NOW + 500), NOW);
        assert_eq!((h.budget_until, h.budget_reason.clone()), (0, None));
        assert_eq!(h.status, Status::RateLimited, "the vendor's limit stays");
        assert_eq!(h.recovers_at(None, NOW), Some(NOW + 900));
        // A reset lifts the vendor's verdicts only.
        h.apply(&spent(NOW + 700), NOW);
        h.apply(&Report::Cleared, NOW);
        assert_eq!(
            (h.status, h.until, h.last_error.clone()),
            (Status::Ok, 0, None)
        );
        assert_eq!(h.budget_until, NOW + 700);
    }

    fn opt<'a>(id: &'a str, health: &'a Health) -> Contender<'a> {
        Contender {
            id,
            priority: 1,
            max_concurrency: None,
            weight: 1,
            serves: true,
            in_flight: 0,
            pick_seq: 0,
            health,
        }
    }

    fn taken<'a>(c: &Choice<'a>) -> &'a str {
        match c {
            Choice::Take { id, .. } => id,
            Choice::Unavailable { .. } => panic!("nothing chosen"),
        }
    }

    #[test]
    fn priority_then_relative_load_then_least_recently_picked() {
        let h = Health::default();
        let mut a = opt("a", &h);
        let mut b = opt("b", &h);
        let mut c = opt("c", &h);
        c.priority = 0;
        c.max_concurrency = Some(1);
        c.in_flight = 1;
        assert_eq!(
            taken(&choose(&[a, b, c], None, NOW, None)),
            "a",
            "c is full"
        );
        c.in_flight = 0;
        assert_eq!(
            taken(&choose(&[a, b, c], None, NOW, None)),
            "c",
            "lowest priority number"
        );
        // Same priority: fewest in flight relative to cap × weight.
        a.max_concurrency = Some(10);
        a.in_flight = 5;
        b.max_concurrency = Some(4);
        b.in_flight = 1;
        assert_eq!(taken(&choose(&[a, b], None, NOW, None)), "b");
        b.weight = 1;
        a.weight = 4; // 5 / 40 < 1 / 4
        assert_eq!(taken(&choose(&[a, b], None, NOW, None)), "a");
        // Equal load: the one picked longest ago.
        a = opt("a", &h);
        b = opt("b", &h);
        a.pick_seq = 7;
        b.pick_seq = 3;
        assert_eq!(taken(&choose(&[a, b], None, NOW, None)), "b");
    }

    #[test]
    fn sessions_stay_escape_or_move() {
        let ok = Health::default();
        let limited = Health {
            status: Status::RateLimited,
            until: NOW + 5_000,
            ..Health::default()
        };
        let a = opt("a", &ok);
        let b = opt("b", &ok);
        let c = choose(&[a, b], None, NOW, Some((Some("b"), Overflow::Escape)));
        assert_eq!(
            c,
            Choice::Take {
                id: "b",
                sticky: Sticky::Hit
            }
        );
        let c = choose(&[a, b], None, NOW, Some((None, Overflow::Escape)));
        assert_eq!(
            c,
            Choice::Take {
                id: "a",
                sticky: Sticky::Bound
            }
        );
        let b_limited = opt("b", &limited);
        let c = choose(
            &[a, b_limited],
            None,
            NOW,
            Some((Some("b"), Overflow::Escape)),
        );
        assert_eq!(
            c,
            Choice::Take {
                id: "a",
                sticky: Sticky::Escaped
            }
        );
        let c = choose(
            &[a, b_limited],
            None,
            NOW,
            Some((Some("b"), Overflow::Move)),
        );
        assert_eq!(
            c,
            Choice::Take {
                id: "a",
                sticky: Sticky::Moved
            }
        );
        // Waiting for it: its recovery; "soon" when it is only full; nothing when this request
        // tried it; an escape when it never comes back on its own.
        let wait = |b| Some((Some(b), Overflow::Wait));
        assert_eq!(
            choose(&[a, b_limited], None, NOW, wait("b")),
            Choice::Unavailable {
                retry_at: Some(NOW + 5_000)
            }
        );
        let mut full = opt("b", &ok);
        full.max_concurrency = Some(1);
        full.in_flight = 1;
        assert_eq!(
            choose(&[a, full], None, NOW, wait("b")),
            Choice::Unavailable {
                retry_at: Some(NOW + 1_000)
            }
        );
        full.max_concurrency = Some(0);
        full.in_flight = 0;
        assert_eq!(
            choose(&[a, full], None, NOW, wait("b")),
            Choice::Unavailable { retry_at: None }
        );
        let dead = Health {
            status: Status::Unauthorized,
            ..Health::default()
        };
        assert_eq!(
            choose(&[a, opt("b", &dead)], None, NOW, wait("b")),
            Choice::Take {
                id: "a",
                sticky: Sticky::Escaped
            }
        );
        assert_eq!(
            choose(&[a, b], None, NOW, wait("b")),
            Choice::Take {
                id: "b",
                sticky: Sticky::Hit
            }
        );
        // A binding to an account no longer among the candidates is replaced.
        let c = choose(&[a], None, NOW, Some((Some("gone"), Overflow::Escape)));
        assert_eq!(
            c,
            Choice::Take {
                id: "a",
                sticky: Sticky::Bound
            }
        );
    }

    #[test]
    fn unavailable_says_when_the_earliest_account_recovers() {
        let soon = Health {
            status: Status::CoolingDown,
            until: NOW + 3_000,
            ..Health::default()
        };
        let later = Health {
            status: Status::RateLimited,
            until: NOW + 9_000,
            ..Health::default()
        };
        let dead = Health {
            status: Status::Unauthorized,
            ..Health::default()
        };
        let c = choose(
            &[opt("a", &later), opt("b", &soon), opt("c", &dead)],
            None,
            NOW,
            None,
        );
        assert_eq!(
            c,
            Choice::Unavailable {
                retry_at: Some(NOW + 3_000)
            }
        );
        let c = choose(&[opt("c", &dead)], None, NOW, None);
        assert_eq!(c, Choice::Unavailable { retry_at: None });
        // Once the time passes, it serves again on its own.
        assert_eq!(
            taken(&choose(&[opt("b", &soon)], None, NOW + 3_000, None)),
            "b"
        );
    }

    #[test]
    fn health_transitions() {
        let mut h = Health::default();
        let fail = Report::Failure {
            base_ms: 1_000,
            max_ms: 10_000,
            error: "500".into(),
        };
        h.apply(&fail, NOW);
        assert_eq!(
            (h.status, h.until, h.consecutive_failures),
            (Status::CoolingDown, NOW + 1_000, 1)
        );
        h.apply(&fail, NOW);
        assert_eq!(h.until, NOW + 2_000);
        for _ in 0..10 {
            h.apply(&fail, NOW);
        }
        assert_eq!(h.until, NOW + 10_000, "capped");
        assert!(!h.is_clean());
        // A success of a request sent before the last failure says nothing of the account
        // since: the cooldown and the streak stay.
        h.apply(&Report::Success { sent_at: NOW - 1 }, NOW);
        assert_eq!(
            (h.status_at(NOW), h.consecutive_failures),
            (Status::CoolingDown, 12)
        );
        h.apply(&Report::Success { sent_at: NOW }, NOW);
        assert_eq!((h.status_at(NOW), h.consecutive_failures), (Status::Ok, 0));
        assert_eq!(h.last_error.as_deref(), Some("500"));
        // Clean again, its last error kept: the next successes need no report.
        assert!(h.is_clean());

        // A family limit leaves other families alone.
        let rl = Report::RateLimited {
            until: NOW + 60_000,
            family: Some("opus".into()),
            error: "429".into(),
        };
        h.apply(&rl, NOW);
        assert!(!h.can_serve(Some("opus"), NOW));
        assert!(h.can_serve(Some("sonnet"), NOW));
        // Its success needs no report: it would not lift opus's limit.
        assert!(h.is_clean_for(Some("sonnet")));
        assert!(!h.is_clean_for(Some("opus")));
        assert!(!h.is_clean());
        assert!(h.can_serve(Some("opus"), NOW + 60_000));
        // A success does not lift a rate limit; the reset does.
        let rl = Report::RateLimited {
            until: NOW + 5_000,
            family: None,
            error: "429".into(),
        };
        h.apply(&rl, NOW);
        h.apply(&Report::Success { sent_at: NOW + 1 }, NOW + 1);
        assert!(!h.can_serve(None, NOW + 1));
        assert!(h.can_serve(None, NOW + 5_000));
        assert!(!h.is_clean());
        // Once both limits ran out, a success makes the account clean again.
        h.apply(
            &Report::Success {
                sent_at: NOW + 60_000,
            },
            NOW + 60_000,
        );
        assert!(h.is_clean(), "{h:?}");
        // A shorter cooldown never shortens a longer limit.
        h.apply(&rl, NOW);
        h.apply(
            &Report::Overloaded {
                until: NOW + 100,
                error: "529".into(),
            },
            NOW,
        );
        assert_eq!(h.recovers_at(None, NOW), Some(NOW + 5_000));
        // Unauthorized stays until reset.
        h.apply(
            &Report::Unauthorized {
                error: "401".into(),
            },
            NOW,
        );
        h.apply(&fail, NOW);
        assert_eq!(h.status_at(NOW + 1_000_000_000), Status::Unauthorized);
        assert_eq!(h.recovers_at(None, NOW), None);
    }
}
