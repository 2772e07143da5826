//! Escrow inventory: a bounded counter (AntidoteDB's, after Balegas et al., "Putting
//! consistency back into eventual consistency", SRDS 2015). A SKU's stock is held as rights
//! owned by regions; a region admits a reservation only within the rights it holds, so the
//! units admitted can never exceed the stock in any region's view or in `reconciled`,
//! whatever the partitions.
//!
//! The state is grow-only: rights granted to each region (by stock adds and releases), a
//! matrix of rights transferred between regions, and the units each region consumed. A
//! region's rights = granted + received − given − consumed. Only the region itself lowers
//! its rights (by consuming or giving); others only raise them. Its own view (reconciled
//! state + its own events not reconciled yet) therefore never shows more rights than the
//! merged histories give it at its events' place in the reconciled order, which is why the
//! merge never has to revoke an admitted reservation.
//!
//! Rights move through the logs: a region out of rights records a [`RightsRequest`]; a region
//! that sees an open request in its view gives part of its spare rights with a
//! [`RightsTransfer`] in its history (the donation policy, [`donation`]); the receiver gains
//! them once the transfer reaches it through `reconciled`.
//!
//! [`RightsRequest`]: rf_schemas::Op::RightsRequest
//! [`RightsTransfer`]: rf_schemas::Op::RightsTransfer

use rf_schemas::Share;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The rights of one SKU under the escrow policy. Canonical JSON (ordered maps).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    /// Rights granted to each region: its shares of stock adds, and units released there.
    pub granted: BTreeMap<String, i64>,
    /// `transferred[from][to]`: rights given.
    pub transferred: BTreeMap<String, BTreeMap<String, i64>>,
    /// Units each region's admitted reservations consumed.
    pub consumed: BTreeMap<String, i64>,
    /// Requests for rights each region recorded (numbered 1, 2, ...).
    pub requested: BTreeMap<String, i64>,
    /// `answered[donor][requester]`: the last request number the donor answered.
    pub answered: BTreeMap<String, BTreeMap<String, i64>>,
}

fn get(m: &BTreeMap<String, i64>, k: &str) -> i64 {
    m.get(k).copied().unwrap_or(0)
}

fn add(m: &mut BTreeMap<String, i64>, k: &str, v: i64) -> Option<()> {
    let e = m.entry(k.to_owned()).or_insert(0);
    *e = e.checked_add(v)?;
    Some(())
}

impl Escrow {
    /// Rights `region` holds: granted + received − given − consumed.
    pub fn rights(&self, region: &str) -> i64 {
        let received: i64 = self
            .transferred
            .values()
            .filter_map(|to| to.get(region))
            .sum();
        let given: i64 = self
            .transferred
            .get(region)
            .map_or(0, |to| to.values().sum());
        get(&self.granted, region) + received - given - get(&self.consumed, region)
    }

    /// Every region the state names, in name order.
    pub fn regions(&self) -> Vec<String> {
        let mut r: std::collections::BTreeSet<String> = self.granted.keys().cloned().collect();
        r.extend(self.consumed.keys().cloned());
        r.extend(self.requested.keys().cloned());
        for (from, to) in &self.transferred {
            r.insert(from.clone());
            r.extend(to.keys().cloned());
        }
        r.into_iter().collect()
    }

    /// Rights per region (those that name one), in name order.
    pub fn rights_by_region(&self) -> BTreeMap<String, i64> {
        self.regions()
            .into_iter()
            .map(|r| {
                let v = self.rights(&r);
                (r, v)
            })
            .collect()
    }

    /// Rights every region but `region` holds together.
    pub fn others(&self, region: &str) -> i64 {
        self.regions()
            .iter()
            .filter(|r| *r != region)
            .map(|r| self.rights(r))
            .sum()
    }

    /// Grant rights (a stock add's share, or released units). `None`: overflow.
    pub fn grant(&mut self, region: &str, qty: i64) -> Option<()> {
        add(&mut self.granted, region, qty)
    }

    /// Consume `qty` of `region`'s rights for a reservation; `Err` with the reason (nothing
    /// changed) when it does not hold them.
    pub fn consume(&mut self, region: &str, qty: i64) -> Result<(), String> {
        let held = self.rights(region);
        if qty > held {
            return Err(self.shortage(region, qty));
        }
        add(&mut self.consumed, region, qty).ok_or("consumed units would overflow")?;
        Ok(())
    }

    /// Why `region` cannot admit `qty`.
    pub fn shortage(&self, region: &str, qty: i64) -> String {
        format!(
            "no local rights: {region} holds {} of the {qty} asked; other regions hold {}",
            self.rights(region).max(0),
            self.others(region)
        )
    }

    /// A transfer of `qty` rights from `from` to `to`, answering request `request`; `Err`
    /// (nothing changed) when `from` does not hold them.
    pub fn transfer(&mut self, from: &str, to: &str, qty: i64, request: i64) -> Result<(), String> {
        if from == to {
            return Err(format!("{from} cannot transfer rights to itself"));
        }
        let held = self.rights(from);
        if qty > held {
            return Err(format!(
                "transfer of {qty} rights exceeds the {held} {from} holds"
            ));
        }
        let row = self.transferred.entry(from.to_owned()).or_default();
        add(row, to, qty).ok_or("transferred rights would overflow")?;
        let a = self.answered.entry(from.to_owned()).or_default();
        let e = a.entry(to.to_owned()).or_insert(0);
        *e = (*e).max(request);
        Ok(())
    }

    /// `region` records its next request for rights.
    pub fn request(&mut self, region: &str) {
        *self.requested.entry(region.to_owned()).or_insert(0) += 1;
    }

    /// Whether `region`'s last request is still open: no region has answered it.
    pub fn request_open(&self, region: &str) -> bool {
        let n = get(&self.requested, region);
        n > 0
            && self
                .answered
                .values()
                .all(|to| to.get(region).copied().unwrap_or(0) < n)
    }

    /// Units granted in all, less units consumed: the stock still available.
    pub fn available(&self) -> i64 {
        self.granted.values().sum::<i64>() - self.consumed.values().sum::<i64>()
    }
}

/// How a stock add of `qty` accepted by `accepting` is split: all to the accepting region
/// (no weights), or across the weighted regions in proportion (the remainder one unit each
/// to the regions in name order). Only positive shares are listed.
pub fn split(qty: i64, accepting: &str, weights: &BTreeMap<String, u32>) -> Vec<Share> {
    let total: i64 = weights.values().map(|w| i64::from(*w)).sum();
    if weights.is_empty() || total == 0 {
        return vec![Share {
            region: accepting.to_owned(),
            qty,
        }];
    }
    let mut shares: Vec<Share> = weights
        .iter()
        .map(|(r, w)| Share {
            region: r.clone(),
            qty: ((i128::from(qty) * i128::from(*w)) / i128::from(total)) as i64,
        })
        .collect();
    // Each share was rounded down, so fewer units are left than there are shares.
    let left = qty - shares.iter().map(|s| s.qty).sum::<i64>();
    for s in shares.iter_mut().take(left as usize) {
        s.qty += 1;
    }
    shares.retain(|s| s.qty > 0);
    shares
}

/// The donation policy: what `me` gives to each region whose request is open and that it has
/// not answered yet, from its spare rights (above `keep`, a local reserve): half of what is
/// spare (at least one unit), to the requesters in name order, each one request at a time.
/// Half, not all: the donor may have demand of its own, and several regions may be asking;
/// repeated requests converge on the stock selling out (each round halves what is left).
/// Returns (to, qty, request number answered).
pub fn donation(e: &Escrow, me: &str, keep: i64) -> Vec<(String, i64, i64)> {
    let mut spare = e.rights(me) - keep;
    let mut out = Vec::new();
    for (r, &n) in &e.requested {
        if r == me || spare <= 0 || !e.request_open(r) {
            continue;
        }
        let answered = e
            .answered
            .get(me)
            .and_then(|a| a.get(r))
            .copied()
            .unwrap_or(0);
        if answered >= n {
            continue;
        }
        let give = ((spare + 1) / 2).max(1).min(spare);
        spare -= give;
        out.push((r.clone(), give, n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_are_granted_plus_received_minus_given_minus_consumed() {
        let mut e = Escrow::default();
        e.grant("eu", 10).unwrap();
        e.grant("us", 5).unwrap();
        e.consume("eu", 3).unwrap();
        e.transfer("eu", "us", 4, 1).unwrap();
        assert_eq!(e.rights("eu"), 3);
        assert_eq!(e.rights("us"), 9);
        assert_eq!(e.available(), 12);
        assert_eq!(e.rights("eu") + e.rights("us"), e.available());
        let err = e.consume("eu", 4).unwrap_err();
        assert_eq!(
            err,
            "no local rights: eu holds 3 of the 4 asked; other regions hold 9"
        );
        assert!(e.transfer("eu", "us", 4, 2).is_err());
        assert_eq!(e.rights("eu"), 3, "a refused step changes nothing");
    }

    #[test]
    fn split_by_weights_conserves_the_quantity() {
        let w: BTreeMap<String, u32> = [("ap", 1), ("eu", 1), ("us", 1)]
            .into_iter()
            .map(|(r, w)| (r.to_owned(), w))
            .collect();
        let s = split(1000, "eu", &w);
        assert_eq!(s.iter().map(|s| s.qty).sum::<i64>(), 1000);
        assert_eq!(
            s.iter().map(|s| s.qty).collect::<Vec<_>>(),
            vec![334, 333, 333]
        );
        assert_eq!(split(2, "eu", &w).len(), 2);
        assert_eq!(
            split(7, "eu", &BTreeMap::new()),
            vec![Share {
                region: "eu".into(),
                qty: 7
            }]
        );
    }

    #[test]
    fn donation_gives_half_of_the_spare_to_open_requests_once() {
        let mut e = Escrow::default();
        e.grant("eu", 100).unwrap();
        e.request("us");
        assert!(e.request_open("us"));
        let d = donation(&e, "eu", 10);
        assert_eq!(d, vec![("us".to_owned(), 45, 1)]);
        e.transfer("eu", "us", 45, 1).unwrap();
        assert!(!e.request_open("us"));
        assert!(donation(&e, "eu", 10).is_empty(), "answered once");
        // The last unit goes too, with no reserve.
        let mut one = Escrow::default();
        one.grant("eu", 1).unwrap();
        one.request("us");
        assert_eq!(donation(&one, "eu", 0), vec![("us".to_owned(), 1, 1)]);
    }
}
