//! Counting what reached the SMTP receiver against what should have: every (recipient,
//! Message-ID) pair once, nothing missing, nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{Transaction, sample_catchall_expected, sample_catchall_mail};

/// One delivery: (recipient, Message-ID).
pub type Pair = (String, String);

/// The Message-ID header of a raw message (LF or CRLF line ends), trimmed; empty if none.
pub fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("Message-ID")
        {
            return value.trim().to_owned();
        }
    }
    String::new()
}

/// The pairs [`sample_catchall_mail`] should produce (see [`sample_catchall_expected`]).
pub fn sample_catchall_pairs() -> Vec<Pair> {
    sample_catchall_mail()
        .iter()
        .zip(sample_catchall_expected())
        .flat_map(|(raw, (_, rcpts))| {
            let id = message_id(raw);
            rcpts.into_iter().map(move |r| (r.to_owned(), id.clone()))
        })
        .collect()
}

/// How many times each pair reached the receiver.
pub fn delivery_counts(transactions: &[Transaction]) -> BTreeMap<Pair, usize> {
    let mut counts = BTreeMap::new();
    for t in transactions {
        let id = t.header("Message-ID").unwrap_or_default();
        for rcpt in &t.rcpts {
            *counts.entry((rcpt.clone(), id.clone())).or_insert(0) += 1;
        }
    }
    counts
}

/// Expected deliveries compared with what arrived.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Expected pairs that never arrived.
    pub missing: Vec<Pair>,
    /// Pairs that arrived but were not expected.
    pub unexpected: Vec<Pair>,
    /// Copies beyond the first, summed over all pairs.
    pub duplicates: usize,
    /// The pairs that arrived more than once, with their count.
    pub duplicated: Vec<(Pair, usize)>,
    /// Deliveries that arrived, duplicates included.
    pub arrived: usize,
}

impl Tally {
    /// Compares `transactions` with the `expected` pairs (each expected exactly once).
    pub fn of(expected: &[Pair], transactions: &[Transaction]) -> Tally {
        let counts = delivery_counts(transactions);
        let mut tally = Tally {
            arrived: counts.values().sum(),
            ..Tally::default()
        };
        for pair in expected {
            if !counts.contains_key(pair) {
                tally.missing.push(pair.clone());
            }
        }
        let expected: BTreeSet<&Pair> = expected.iter().collect();
        for (pair, &n) in &counts {
            if !expected.contains(pair) {
                tally.unexpected.push(pair.clone());
            }
            if n > 1 {
                tally.duplicates += n - 1;
                tally.duplicated.push((pair.clone(), n));
            }
        }
        tally
    }

    /// Everything arrived exactly once and nothing else did.
    pub fn exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.duplicates == 0
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} arrived, {} missing, {} unexpected, {} duplicate(s)",
            self.arrived,
            self.missing.len(),
            self.unexpected.len(),
            self.duplicates
        )?;
        if !self.missing.is_empty() {
            write!(
                f,
                "; missing e.g. {:?}",
                &self.missing[..self.missing.len().min(5)]
            )?;
        }
        if !self.unexpected.is_empty() {
            let n = self.unexpected.len().min(5);
            write!(f, "; unexpected e.g. {:?}", &self.unexpected[..n])?;
        }
        if !self.duplicated.is_empty() {
            let n = self.duplicated.len().min(5);
            write!(f, "; duplicated e.g. {:?}", &self.duplicated[..n])?;
        }
        Ok(())
    }
}
