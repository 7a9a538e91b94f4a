//! Splitting a data set among federated-learning parties.
//!
//! Two schemes, both deterministic given a seed (ChaCha20, which is not about secrecy
//! here, only about reproducible streams across platforms):
//!
//! - **IID**: shuffle all indices, cut them into near-equal contiguous chunks.
//! - **Dirichlet(alpha)**, the usual label-skew benchmark: for each class, draw the
//!   parties' shares from a symmetric Dirichlet(alpha) and deal that class's shuffled
//!   indices accordingly. Small alpha (0.1) gives each party a few dominant classes;
//!   large alpha (100) approaches IID.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Gamma};

use super::DataError;

/// How [`partition`] splits examples among parties.
///
/// Parses from the strings a CLI takes, and prints back the same way:
///
/// ```
/// use hefl::data::Partition;
///
/// assert_eq!("iid".parse::<Partition>()?, Partition::Iid);
/// let skewed: Partition = "dirichlet:0.5".parse()?;
/// assert_eq!(skewed, Partition::Dirichlet { alpha: 0.5 });
/// assert_eq!(skewed.to_string(), "dirichlet:0.5");
/// assert!("dirichlet".parse::<Partition>().is_err());
/// # Ok::<(), hefl::data::DataError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Partition {
    /// Uniformly at random, near-equal sizes.
    Iid,
    /// Label skew: each class is shared among parties in proportions drawn from a
    /// symmetric Dirichlet distribution with concentration `alpha` (> 0; smaller is
    /// more skewed).
    Dirichlet {
        /// Concentration parameter.
        alpha: f64,
    },
}

impl FromStr for Partition {
    type Err = DataError;

    /// Accepts `iid` and `dirichlet:ALPHA` (case-insensitive scheme name).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| DataError::ParsePartition {
            input: input.to_string(),
            reason,
        };
        let trimmed = input.trim();
        let (scheme, param) = match trimmed.split_once(':') {
            Some((scheme, param)) => (scheme, Some(param.trim())),
            None => (trimmed, None),
        };
        match (scheme.to_ascii_lowercase().as_str(), param) {
            ("iid", None) => Ok(Partition::Iid),
            ("iid", Some(_)) => Err(err("'iid' takes no parameter".into())),
            ("dirichlet", None) | ("dirichlet", Some("")) => {
                Err(err("missing alpha after 'dirichlet:'".into()))
            }
            ("dirichlet", Some(param)) => {
                let alpha: f64 = param
                    .parse()
                    .map_err(|_| err(format!("alpha '{param}' is not a number")))?;
                check_alpha(alpha)
                    .map_err(|_| err(format!("alpha must be finite and > 0, found {alpha}")))?;
                Ok(Partition::Dirichlet { alpha })
            }
            _ => Err(err(format!("unknown scheme '{scheme}'"))),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Iid => write!(f, "iid"),
            Partition::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
        }
    }
}

fn check_alpha(alpha: f64) -> Result<(), DataError> {
    if alpha.is_finite() && alpha > 0.0 {
        Ok(())
    } else {
        Err(DataError::BadAlpha { alpha })
    }
}

/// Splits the examples whose labels are `labels` among `parties`: returns, for each
/// party, indices into `labels` (and so into the data set's rows).
///
/// Every index appears in exactly one party; the result depends only on the inputs
/// and `seed`. Each party's indices are in random order.
///
/// With [`Partition::Dirichlet`], a party whose draw gave it nothing receives one
/// example taken from the largest party, so every party holds at least one example
/// (possible because `parties <= labels.len()` is required); a party may otherwise be
/// very small when alpha is small.
///
/// Errors: `parties == 0`, `parties > labels.len()`, alpha not finite and positive.
///
/// ```
/// use hefl::data::{Partition, partition};
///
/// let labels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0];
/// let parts = partition(&labels, 3, Partition::Iid, 7)?;
/// let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
/// assert_eq!(sizes, vec![4, 4, 3]);
/// assert_eq!(parts, partition(&labels, 3, Partition::Iid, 7)?);
/// # Ok::<(), hefl::data::DataError>(())
/// ```
pub fn partition(
    labels: &[u8],
    parties: usize,
    scheme: Partition,
    seed: u64,
) -> Result<Vec<Vec<usize>>, DataError> {
    if parties == 0 {
        return Err(DataError::NoParties);
    }
    if let Partition::Dirichlet { alpha } = scheme {
        check_alpha(alpha)?;
    }
    if parties > labels.len() {
        return Err(DataError::TooManyParties {
            parties,
            samples: labels.len(),
        });
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    match scheme {
        Partition::Iid => Ok(iid(labels.len(), parties, &mut rng)),
        Partition::Dirichlet { alpha } => dirichlet(labels, parties, alpha, &mut rng),
    }
}

fn iid(n: usize, parties: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<usize>> {
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(rng);
    let (base, extra) = (n / parties, n % parties);
    let mut rest = indices.as_slice();
    (0..parties)
        .map(|party| {
            let (chunk, tail) = rest.split_at(base + usize::from(party < extra));
            rest = tail;
            chunk.to_vec()
        })
        .collect()
}

fn dirichlet(
    labels: &[u8],
    parties: usize,
    alpha: f64,
    rng: &mut ChaCha20Rng,
) -> Result<Vec<Vec<usize>>, DataError> {
    let gamma = Gamma::new(alpha, 1.0).map_err(|_| DataError::BadAlpha { alpha })?;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); usize::from(u8::MAX) + 1];
    for (index, &label) in labels.iter().enumerate() {
        by_class[usize::from(label)].push(index);
    }
    let mut shares: Vec<Vec<usize>> = vec![Vec::new(); parties];
    for mut class in by_class.into_iter().filter(|c| !c.is_empty()) {
        class.shuffle(rng);
        let mut weights: Vec<f64> = (0..parties).map(|_| gamma.sample(rng)).collect();
        let mut total: f64 = weights.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            // Every draw underflowed (alpha near 0): the limit of Dirichlet(alpha) as
            // alpha -> 0 puts all the mass on one party.
            weights.fill(0.0);
            weights[rng.random_range(0..parties)] = 1.0;
            total = 1.0;
        }
        // Cut at the rounded cumulative proportions, so the counts add up exactly.
        let n = class.len();
        let (mut cumulative, mut start) = (0.0, 0);
        for (party, weight) in weights.iter().enumerate() {
            cumulative += weight;
            let end = if party + 1 == parties {
                n
            } else {
                ((cumulative / total * n as f64).round() as usize).clamp(start, n)
            };
            shares[party].extend_from_slice(&class[start..end]);
            start = end;
        }
    }
    // Give each empty party one example from the largest one. The largest has at least
    // two while some party is empty, because there are at least as many examples as
    // parties.
    for party in 0..parties {
        if !shares[party].is_empty() {
            continue;
        }
        let donor = (0..parties)
            .max_by_key(|&p| shares[p].len())
            .unwrap_or(party);
        let len = shares[donor].len();
        if len > 1 {
            let moved = shares[donor].swap_remove(rng.random_range(0..len));
            shares[party].push(moved);
        }
    }
    for share in &mut shares {
        share.shuffle(rng);
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_helpful() {
        for bad in [
            "",
            "iid:3",
            "dirichlet",
            "dirichlet:",
            "dirichlet:x",
            "dirichlet:-1",
            "dirichlet:inf",
            "shards:2",
        ] {
            let err = bad.parse::<Partition>().expect_err(bad).to_string();
            assert!(err.contains("expected 'iid' or 'dirichlet:ALPHA'"), "{err}");
        }
        assert_eq!(" IID ".parse::<Partition>().ok(), Some(Partition::Iid));
        assert_eq!(
            "Dirichlet: 100".parse::<Partition>().ok(),
            Some(Partition::Dirichlet { alpha: 100.0 })
        );
    }

    #[test]
    fn display_round_trips() {
        for p in [Partition::Iid, Partition::Dirichlet { alpha: 0.05 }] {
            assert_eq!(p.to_string().parse::<Partition>().ok(), Some(p));
        }
    }

    #[test]
    fn tiny_alpha_still_gives_everyone_something() {
        let labels: Vec<u8> = (0..50).map(|i| (i % 10) as u8).collect();
        let parts = partition(&labels, 50, Partition::Dirichlet { alpha: 1e-300 }, 1)
            .expect("valid arguments");
        assert!(parts.iter().all(|p| p.len() == 1));
    }
}
