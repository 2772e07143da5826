//! The two big per-key collections of the built-in aggregates, each with the index its
//! published form needs, so that one event costs O(log n) however large the key grows:
//! a leaderboard's [`Board`] keeps a ranking beside the best scores (top K in O(K)), an
//! inventory's [`Orders`] keeps the total reserved beside the open orders. Both serialise
//! exactly as the plain map they wrap (the stores' format is unchanged); the index is
//! rebuilt on deserialisation and is not part of equality.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// Best score per player, ranked.
#[derive(Debug, Clone, Default)]
pub struct Board {
    best: BTreeMap<String, i64>,
    /// (score descending, player ascending): the leaderboard's order.
    ranking: BTreeSet<(Reverse<i64>, String)>,
}

impl Board {
    /// Keep `score` as `player`'s best if it is higher than the one held.
    pub fn submit(&mut self, player: &str, score: i64) {
        match self.best.get_mut(player) {
            Some(b) if *b >= score => {}
            Some(b) => {
                self.ranking.remove(&(Reverse(*b), player.to_owned()));
                *b = score;
                self.ranking.insert((Reverse(score), player.to_owned()));
            }
            None => {
                self.best.insert(player.to_owned(), score);
                self.ranking.insert((Reverse(score), player.to_owned()));
            }
        }
    }

    pub fn best(&self, player: &str) -> Option<i64> {
        self.best.get(player).copied()
    }

    pub fn len(&self) -> usize {
        self.best.len()
    }

    pub fn is_empty(&self) -> bool {
        self.best.is_empty()
    }

    /// The first `k` players by best score (ties by player name).
    pub fn top(&self, k: usize) -> impl Iterator<Item = (&str, i64)> {
        self.ranking.iter().take(k).map(|(s, p)| (p.as_str(), s.0))
    }

    /// Every player's best, by player name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.best.iter().map(|(p, s)| (p.as_str(), *s))
    }
}

impl PartialEq for Board {
    fn eq(&self, other: &Self) -> bool {
        self.best == other.best
    }
}
impl Eq for Board {}

impl FromIterator<(String, i64)> for Board {
    fn from_iter<I: IntoIterator<Item = (String, i64)>>(iter: I) -> Self {
        let mut b = Board::default();
        for (p, s) in iter {
            b.submit(&p, s);
        }
        b
    }
}

impl Serialize for Board {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.best.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Board {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, i64>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// Open reservations (order id → quantity), with their total.
#[derive(Debug, Clone, Default)]
pub struct Orders {
    held: BTreeMap<String, i64>,
    total: i64,
}

impl Orders {
    pub fn get(&self, order_id: &str) -> Option<i64> {
        self.held.get(order_id).copied()
    }

    pub fn contains_key(&self, order_id: &str) -> bool {
        self.held.contains_key(order_id)
    }

    /// Hold `qty` for `order_id` (which holds nothing yet).
    pub fn insert(&mut self, order_id: String, qty: i64) {
        if let Some(old) = self.held.insert(order_id, qty) {
            self.total = self.total.saturating_sub(old);
        }
        self.total = self.total.saturating_add(qty);
    }

    pub fn remove(&mut self, order_id: &str) -> Option<i64> {
        let q = self.held.remove(order_id)?;
        self.total = self.total.saturating_sub(q);
        Some(q)
    }

    /// Units held by all open orders.
    pub fn total(&self) -> i64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.held.iter().map(|(o, q)| (o.as_str(), *q))
    }
}

impl PartialEq for Orders {
    fn eq(&self, other: &Self) -> bool {
        self.held == other.held
    }
}
impl Eq for Orders {}

impl FromIterator<(String, i64)> for Orders {
    fn from_iter<I: IntoIterator<Item = (String, i64)>>(iter: I) -> Self {
        let mut o = Orders::default();
        for (id, q) in iter {
            o.insert(id, q);
        }
        o
    }
}

impl Serialize for Orders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.held.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Orders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, i64>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The index always agrees with a full sort of the map, and survives a JSON round
        /// trip in the map's own format.
        #[test]
        fn board_ranking_matches_a_full_sort(subs in prop::collection::vec((0u8..20, -50i64..50), 0..200)) {
            let mut b = Board::default();
            let mut plain: BTreeMap<String, i64> = BTreeMap::new();
            for (p, s) in subs {
                let p = format!("p{p}");
                b.submit(&p, s);
                let e = plain.entry(p).or_insert(s);
                *e = (*e).max(s);
            }
            let mut want: Vec<(String, i64)> = plain.clone().into_iter().collect();
            want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let got: Vec<(String, i64)> = b.top(usize::MAX).map(|(p, s)| (p.to_owned(), s)).collect();
            prop_assert_eq!(&got, &want);
            let json = serde_json::to_string(&b).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&plain).unwrap());
            let back: Board = serde_json::from_str(&json).unwrap();
            let again: Vec<(String, i64)> = back.top(usize::MAX).map(|(p, s)| (p.to_owned(), s)).collect();
            prop_assert_eq!(again, want);
        }

        #[test]
        fn orders_total_is_the_sum(ops in prop::collection::vec((0u8..20, 1i64..9, any::<bool>()), 0..200)) {
            let mut o = Orders::default();
            for (id, q, reserve) in ops {
                let id = format!("o{id}");
                if reserve { if !o.contains_key(&id) { o.insert(id, q) } } else { o.remove(&id); }
                prop_assert_eq!(o.total(), o.iter().map(|(_, q)| q).sum::<i64>());
            }
            let back: Orders = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
            prop_assert_eq!(back.total(), o.total());
            prop_assert_eq!(back, o);
        }
    }
}
