//! Causal register conflicts: dotted version vectors (Preguiça et al., "Dotted Version
//! Vectors: Logical Clocks for Optimistic Replication", 2010; Riak's DVVs).
//!
//! Every accepted put has a dot, (region, n): the n-th put to the key the region accepted,
//! assigned by the processor from the key's state (a fold of history, so stable across
//! restarts and replays), and a context: the version vector of what the writer had seen
//! (the token a producer read from `/state/{key}`, or the processor's regional view at
//! acceptance). A put supersedes the siblings its context covers; the others stay as
//! siblings and are concurrent with it: a conflict, reported with both dots. The value is
//! the last writer by (hlc, region, event_id) among the siblings. No time window.

use rf_schemas::{Dot, Hlc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Siblings a register keeps at most: a producer that keeps sending stale contexts would
/// otherwise grow them without bound. Beyond it the oldest (by the reconciled order) go;
/// they are counted in `Causal::dropped`.
pub const MAX_SIBLINGS: usize = 16;

/// A version vector: per region, the highest put number seen. Ordered map: canonical.
pub type Vv = BTreeMap<String, i64>;

/// Whether `vv` covers `dot`: the writer had seen it.
pub fn covers(vv: &Vv, dot: &Dot) -> bool {
    vv.get(&dot.region).is_some_and(|n| *n >= dot.seq)
}

/// `a` joined with `b` (the per-region maximum).
pub fn join(a: &mut Vv, b: &Vv) {
    for (r, n) in b {
        let e = a.entry(r.clone()).or_insert(0);
        *e = (*e).max(*n);
    }
}

/// The token form of a version vector: `region:n` pairs by region name, comma-separated
/// (`eu:3,us:1`; empty for nothing seen). Opaque to producers: they send back what they read.
pub fn token(vv: &Vv) -> String {
    vv.iter()
        .map(|(r, n)| format!("{r}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parse a context token; `Err` names what is wrong.
pub fn parse_token(s: &str) -> Result<Vv, String> {
    let mut vv = Vv::new();
    if s.is_empty() {
        return Ok(vv);
    }
    for part in s.split(',') {
        let (r, n) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("context token part {part:?} is not region:number"))?;
        let n: i64 = n
            .parse()
            .map_err(|_| format!("context token part {part:?}: {n:?} is not a number"))?;
        if r.is_empty() || n < 1 {
            return Err(format!(
                "context token part {part:?} needs a region and a number from 1"
            ));
        }
        if vv.insert(r.to_owned(), n).is_some() {
            return Err(format!("context token names region {r:?} twice"));
        }
    }
    Ok(vv)
}

/// One current version of a register: a put no later put's context covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    pub dot: Dot,
    pub context: Vv,
    pub hlc: Option<Hlc>,
    pub event_id: String,
}

/// The causal part of a register's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Causal {
    /// What the state has seen: every applied put's dot and context, joined. Its token is
    /// the context a writer that read this state sends.
    pub seen: Vv,
    /// The current versions, in the reconciled order (the last one is the value's).
    pub siblings: Vec<Sibling>,
    /// Siblings dropped beyond [`MAX_SIBLINGS`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Causal {
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.siblings.is_empty() && self.dropped == 0
    }

    /// The dot the next put `region` accepts gets.
    pub fn next_dot(&self, region: &str) -> Dot {
        Dot {
            region: region.to_owned(),
            seq: self.seen.get(region).copied().unwrap_or(0) + 1,
        }
    }

    /// The siblings `put` is concurrent with: neither's context covers the other's dot.
    pub fn concurrent(&self, dot: &Dot, context: &Vv) -> Vec<&Sibling> {
        self.siblings
            .iter()
            .filter(|s| s.dot != *dot && !covers(context, &s.dot) && !covers(&s.context, dot))
            .collect()
    }

    /// Apply a put: drop the siblings its context covers and add it, unless a sibling's
    /// context covers it already (it was superseded before it arrived). Returns whether it
    /// is now the register's value (the latest current version).
    pub fn put(&mut self, dot: Dot, context: Vv, hlc: Option<Hlc>, event_id: &str) -> bool {
        join(&mut self.seen, &context);
        let e = self.seen.entry(dot.region.clone()).or_insert(0);
        *e = (*e).max(dot.seq);
        if self
            .siblings
            .iter()
            .any(|s| covers(&s.context, &dot) || s.dot == dot)
        {
            return false;
        }
        self.siblings.retain(|s| !covers(&context, &s.dot));
        self.siblings.push(Sibling {
            dot,
            context,
            hlc,
            event_id: event_id.to_owned(),
        });
        while self.siblings.len() > MAX_SIBLINGS {
            self.siblings.remove(0);
            self.dropped += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(r: &str, n: i64) -> Dot {
        Dot {
            region: r.into(),
            seq: n,
        }
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_named() {
        let vv: Vv = [("eu".to_owned(), 3), ("us".to_owned(), 1)].into();
        assert_eq!(token(&vv), "eu:3,us:1");
        assert_eq!(parse_token("eu:3,us:1").unwrap(), vv);
        assert_eq!(parse_token("").unwrap(), Vv::new());
        for bad in ["eu", "eu:x", ":3", "eu:0", "eu:1,eu:2"] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_put_that_saw_the_other_supersedes_it_and_concurrent_ones_stay() {
        let mut c = Causal::default();
        assert!(c.put(dot("eu", 1), Vv::new(), None, "a"));
        // us saw eu:1: not concurrent, eu:1 is superseded.
        let seen = c.seen.clone();
        assert!(c.concurrent(&dot("us", 1), &seen).is_empty());
        c.put(dot("us", 1), seen, None, "b");
        assert_eq!(c.siblings.len(), 1);
        // ap had seen nothing: concurrent with us:1.
        let conc: Vec<Dot> = c
            .concurrent(&dot("ap", 1), &Vv::new())
            .into_iter()
            .map(|s| s.dot.clone())
            .collect();
        assert_eq!(conc, vec![dot("us", 1)]);
        c.put(dot("ap", 1), Vv::new(), None, "c");
        assert_eq!(c.siblings.len(), 2);
        assert_eq!(token(&c.seen), "ap:1,eu:1,us:1");
        // A put that read this state settles both.
        let seen = c.seen.clone();
        c.put(dot("eu", 2), seen, None, "d");
        assert_eq!(c.siblings.len(), 1);
        assert_eq!(c.next_dot("eu"), dot("eu", 3));
    }
}
