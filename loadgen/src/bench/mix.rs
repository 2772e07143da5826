//! The benchmark workload: counters, registers and contended inventory, 10 % duplicate
//! re-sends, over a key space every key of which is touched. Deterministic for a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rf_harness::workload::Outgoing;
use rf_schemas::{Codec, Event, Op};

/// Stock-keeping units the inventory share contends on.
pub const SKUS: usize = 1_000;
/// Coprime with any key count used here: the first `keys` events visit every key once.
const STRIDE: usize = 1_000_003;

/// Event `i` of a run over `keys` keys: 10 % inventory on `SKUS` keys (30 % stock adds,
/// 70 % reservations), the rest 60/40 counters and registers over the key space. `plain`
/// counts the non-inventory events so far: the first `keys` of them visit every key once.
pub fn event(i: usize, keys: usize, plain: &mut usize, rng: &mut StdRng, seed: u64) -> Event {
    let (key, op) = if rng.random_bool(0.10) {
        let sku = rng.random_range(0..SKUS);
        let op = if rng.random_bool(0.3) {
            Op::stock_add(rng.random_range(1..=20))
        } else {
            Op::Reserve {
                order_id: format!("o-{seed}-{i}"),
                qty: rng.random_range(1..=5),
            }
        };
        (format!("stock:{sku}"), op)
    } else {
        let j = *plain;
        *plain += 1;
        let k = if j < keys {
            (j * STRIDE) % keys
        } else {
            rng.random_range(0..keys)
        };
        if k % 5 < 3 {
            (
                format!("likes:{k}"),
                Op::CounterAdd {
                    delta: rng.random_range(1..=5),
                },
            )
        } else {
            (
                format!("profile:{k}:theme"),
                Op::put(format!("theme-{}", rng.random_range(0..16))),
            )
        }
    };
    Event::new(format!("b{seed}-{i}"), key, op)
}

/// `events` distinct events over `keys` keys plus 10 % duplicate re-sends (each a few
/// records after its original), stamped with the client time now.
pub fn records(events: usize, keys: usize, seed: u64) -> Vec<Outgoing> {
    let mut rng = StdRng::seed_from_u64(seed);
    let codec = Codec::event();
    let now = rf_core::Clock::now_ms(&rf_core::SystemClock);
    let mut out: Vec<Outgoing> = Vec::with_capacity(events * 11 / 10 + 1);
    let mut plain = 0;
    for i in 0..events {
        let mut ev = event(i, keys, &mut plain, &mut rng, seed);
        ev.client_time_ms = Some(now);
        out.push(Outgoing {
            region: 0,
            key: ev.key.clone(),
            payload: codec.encode(&ev).expect("encode"),
        });
        if rng.random_bool(0.10) && out.len() > 20 {
            // A retry of an event sent a little earlier.
            let back = rng.random_range(1..20);
            let dup = out[out.len() - back].clone();
            out.push(dup);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_key_is_touched_and_a_tenth_are_duplicates() {
        let recs = records(12_000, 10_000, 1);
        let keys: HashSet<&str> = recs.iter().map(|r| r.key.as_str()).collect();
        let plain = keys.iter().filter(|k| !k.starts_with("stock:")).count();
        assert_eq!(plain, 10_000);
        let distinct: HashSet<&[u8]> = recs.iter().map(|r| &r.payload[..]).collect();
        assert_eq!(distinct.len(), 12_000);
        let dups = recs.len() - distinct.len();
        assert!((900..1_500).contains(&dups), "{dups} duplicates");
    }
}
