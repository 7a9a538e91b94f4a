//! The mask graph of `robust` secure aggregation: which parties of a round blind with, and
//! hold Shamir shares for, which others.
//!
//! A Harary graph H(k, n) over the round's n parties, as in SecAgg+ (Bell et al., CCS'20) and
//! FCP's `secret_sharing_harary_graph.h`: the parties sit on a ring in a pseudo-random order,
//! and each is linked to the k/2 nearest on either side. Its vertex connectivity is k:
//! removing any k − 1 parties leaves it connected. Parameter rule (a) of the design note
//! (`shared/design/masked-he.md` §1.5) relies on that: with k > c + d (c colluders, d
//! dropouts), the honest alive parties stay connected, so unmasking reveals only their total.
//!
//! Only even k below n − 1 is built (the policy rounds k up to even, §1.5 (a)); an odd k
//! below n − 1 is refused with [`GraphError::OddDegree`], since the odd Harary graphs are not
//! regular for odd n. k ≥ n − 1 gives the complete graph.
//!
//! # Derivation (what every implementation must compute, bit for bit)
//!
//! 1. key = HKDF-SHA256(salt = the run's session salt, ikm = "hefl/v1/graph", info =
//!    "hefl/v1/graph" ‖ r as 8 bytes big-endian ‖ D(S))\[..16\], where D(S) is the set's
//!    digest SHA-256("hefl/v1/party-set" ‖ 0 ‖ ids as 4-byte big-endian).
//! 2. The AES-128-CTR keystream under that key (read as a little-endian u128, hefl's
//!    [`KeyStream`](crate::he::csprng)), counters 0, 1, …, read as consecutive little-endian
//!    u64 words w₀, w₁, ….
//! 3. draw(m) takes the next word w until w < m·⌊(2⁶⁴ − 1)/m⌋ (rejection sampling, so the
//!    result is exactly uniform), and returns w mod m.
//! 4. ring = the ids in increasing order; for i = n − 1 down to 1, swap ring\[i\] with
//!    ring\[draw(i + 1)\] (Fisher–Yates).
//! 5. ring\[p\] is linked to ring\[p ± 1\], …, ring\[p ± k/2\] (indices mod n).
//!
//! The bounded draw is written out here rather than taken from `rand`, whose range sampling
//! has changed between versions: the graph is part of the protocol and must not.

use std::fmt;

use rand::RngCore;
use sha2::Sha256;

use super::blind::PartySet;
use crate::fl::{PartyId, Round};
use crate::he::csprng::SecureRng;

const GRAPH_LABEL: &[u8] = b"hefl/v1/graph";

/// Why a mask graph could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The set has fewer than two parties.
    #[error("a mask graph needs at least 2 parties, the set has {parties}")]
    TooFewParties {
        /// Parties in the set.
        parties: u32,
    },
    /// Zero neighbours per party were asked for.
    #[error(
        "a mask graph needs at least 1 neighbour per party, asked for 0 over {parties} parties"
    )]
    NoNeighbours {
        /// Parties in the set.
        parties: u32,
    },
    /// An odd degree below n − 1 was asked for.
    #[error(
        "no Harary graph H({neighbours}, {parties}) is built: an odd degree below {parties} - 1 \
         is refused (the policy rounds k up to even, here {})",
        .neighbours + 1
    )]
    OddDegree {
        /// Neighbours per party asked for.
        neighbours: u32,
        /// Parties in the set.
        parties: u32,
    },
}

/// A round's neighbour graph over its party set: a Harary graph H(k, n) on the set, its node
/// labels permuted by a public permutation every party computes from the session salt and
/// the round (so the server cannot show different graphs to different parties).
///
/// Why the permutation leaks nothing: it is a public function of public values (the session
/// salt, the round, the set), which anyone, the server included, can compute. It hides
/// nothing and need not: its only job is that the server cannot *choose* it, so it can
/// neither place its colluders around a victim nor give two parties two different graphs.
/// Rule (a)'s guarantee (k > c + d) holds for any labelling, so there the permutation is
/// defence in depth. Rule (b) (random graphs, FCP's probabilities) relies on it being random
/// with respect to the corrupt set: a server that picks the run id (in the salt) or which
/// parties make up a round's set can try several inputs, and 2^b tries cost rule (b) up to b
/// bits of its security margin.
///
/// ```
/// use hefl::fl::{PartyId, Round};
/// use hefl::secagg::{MaskGraph, PartySet};
///
/// let set = PartySet::new((0..10).map(PartyId));
/// let graph = MaskGraph::harary(&set, 4, &[7; 32], Round(3))?;
/// assert_eq!(graph.degree(), 4);
/// let neighbours = graph.neighbours(PartyId(0));
/// assert_eq!(neighbours.len(), 4);
/// assert!(neighbours.iter().all(|&n| graph.linked(n, PartyId(0))));
/// assert!(graph.neighbours(PartyId(99)).is_empty());
/// # Ok::<(), hefl::secagg::GraphError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MaskGraph {
    set: PartySet,
    degree: u32,
    /// The parties in ring order: ring\[p\] is linked to ring\[p ± 1\], …, ring\[p ± k/2\].
    ring: Vec<PartyId>,
    /// The neighbours of each party of `set`, in the set's (increasing) order; each list
    /// increasing.
    adjacency: Vec<Vec<PartyId>>,
}

impl MaskGraph {
    /// The graph of `round` over `set` with `neighbours` = k per party (k >= n - 1: complete).
    /// `salt` is the run's session salt (32 bytes, public but unpredictable before the run).
    ///
    /// Refuses a set of fewer than 2 parties, k = 0, and an odd k below n − 1.
    pub fn harary(
        set: &PartySet,
        neighbours: u32,
        salt: &[u8; 32],
        round: Round,
    ) -> Result<Self, GraphError> {
        let parties = set.len();
        if parties < 2 {
            return Err(GraphError::TooFewParties { parties });
        }
        if neighbours == 0 {
            return Err(GraphError::NoNeighbours { parties });
        }
        let complete = neighbours >= parties - 1;
        if !complete && neighbours % 2 == 1 {
            return Err(GraphError::OddDegree {
                neighbours,
                parties,
            });
        }
        let degree = neighbours.min(parties - 1);
        let ring = permuted_ring(set, salt, round);
        let n = ring.len();
        let mut lists: Vec<(PartyId, Vec<PartyId>)> = ring
            .iter()
            .enumerate()
            .map(|(p, &party)| {
                let mut list: Vec<PartyId> = if complete {
                    set.iter().filter(|&q| q != party).collect()
                } else {
                    // k < n - 1, so k/2 < n/2 and the 2·(k/2) positions are distinct.
                    (1..=degree as usize / 2)
                        .flat_map(|d| [ring[(p + d) % n], ring[(p + n - d) % n]])
                        .collect()
                };
                list.sort_unstable();
                (party, list)
            })
            .collect();
        lists.sort_unstable_by_key(|(party, _)| *party);
        Ok(Self {
            set: set.clone(),
            degree,
            ring,
            adjacency: lists.into_iter().map(|(_, list)| list).collect(),
        })
    }

    /// `party`'s neighbours, in increasing id order (empty if not in the set).
    pub fn neighbours(&self, party: PartyId) -> &[PartyId] {
        match self.set.ids().binary_search(&party) {
            Ok(index) => &self.adjacency[index],
            Err(_) => &[],
        }
    }

    /// Whether `a` and `b` are neighbours.
    pub fn linked(&self, a: PartyId, b: PartyId) -> bool {
        self.neighbours(a).binary_search(&b).is_ok()
    }

    /// The degree k actually used (min(neighbours, n - 1)).
    pub fn degree(&self) -> u32 {
        self.degree
    }

    /// The set.
    pub fn set(&self) -> &PartySet {
        &self.set
    }

    /// The parties in ring order (after the permutation): position p is linked to positions
    /// p ± 1, …, p ± k/2 (mod n), or to every other position when the graph is complete.
    pub fn ring(&self) -> &[PartyId] {
        &self.ring
    }
}

impl fmt::Debug for MaskGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskGraph")
            .field("set", &self.set.to_string())
            .field("degree", &self.degree)
            .finish_non_exhaustive()
    }
}

/// The set's ids shuffled by Fisher–Yates under the graph key of (`salt`, `round`, `set`).
fn permuted_ring(set: &PartySet, salt: &[u8; 32], round: Round) -> Vec<PartyId> {
    let mut key = [0u8; 16];
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), GRAPH_LABEL);
    let info: [&[u8]; 3] = [GRAPH_LABEL, &round.0.to_be_bytes(), &set.digest()];
    // 16 bytes is far below HKDF-SHA256's limit of 8160.
    let expanded = hk.expand_multi_info(&info, &mut key);
    debug_assert!(expanded.is_ok());
    let mut draws = SecureRng::from_key(u128::from_le_bytes(key));
    let mut ring = set.ids().to_vec();
    for i in (1..ring.len()).rev() {
        let j = bounded(&mut draws, i as u64 + 1);
        ring.swap(i, j as usize);
    }
    ring
}

/// A uniform draw from 0..`bound` (`bound` >= 1): the next word below the largest multiple of
/// `bound` that fits in a u64, reduced mod `bound`. Rejects with probability below
/// `bound` / 2^64.
fn bounded(rng: &mut impl RngCore, bound: u64) -> u64 {
    let limit = bound * (u64::MAX / bound);
    loop {
        let word = rng.next_u64();
        if word < limit {
            return word % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const SALT: [u8; 32] = [7; 32];

    fn first(n: u32) -> PartySet {
        PartySet::new((0..n).map(PartyId))
    }

    /// Degree, symmetry, no self loops, and neighbour lists sorted and inside the set.
    fn assert_regular_symmetric(graph: &MaskGraph, expected_degree: u32) {
        assert_eq!(graph.degree(), expected_degree);
        for party in graph.set().iter() {
            let neighbours = graph.neighbours(party);
            assert_eq!(
                neighbours.len(),
                expected_degree as usize,
                "{party} has {neighbours:?}"
            );
            assert!(neighbours.windows(2).all(|w| w[0] < w[1]), "{neighbours:?}");
            assert!(!graph.linked(party, party), "{party} linked to itself");
            for &other in neighbours {
                assert!(graph.set().contains(other), "{other} outside the set");
                assert!(graph.linked(other, party), "{party} -> {other} only");
            }
        }
    }

    /// Whether the graph minus `removed` is connected (breadth-first from any survivor).
    fn connected_without(graph: &MaskGraph, removed: &BTreeSet<PartyId>) -> bool {
        let alive: Vec<PartyId> = graph
            .set()
            .iter()
            .filter(|p| !removed.contains(p))
            .collect();
        let Some(&start) = alive.first() else {
            return true;
        };
        let mut seen = BTreeSet::from([start]);
        let mut queue = vec![start];
        while let Some(party) = queue.pop() {
            for &next in graph.neighbours(party) {
                if !removed.contains(&next) && seen.insert(next) {
                    queue.push(next);
                }
            }
        }
        seen.len() == alive.len()
    }

    /// Every subset of `ids` of `size` elements, in lexicographic order.
    fn subsets(ids: &[PartyId], size: usize) -> Vec<BTreeSet<PartyId>> {
        if size == 0 {
            return vec![BTreeSet::new()];
        }
        (0..ids.len())
            .flat_map(|i| {
                subsets(&ids[i + 1..], size - 1)
                    .into_iter()
                    .map(move |mut rest| {
                        rest.insert(ids[i]);
                        rest
                    })
            })
            .collect()
    }

    #[test]
    fn every_party_has_k_neighbours_symmetric_without_self_loops() {
        let sparse = PartySet::new([3, 9, 10, 41, 42, 57, 58, 60, 77, 1000].map(PartyId));
        for (set, k) in [
            (first(10), 2),
            (first(10), 4),
            (first(10), 6),
            (first(11), 8),
            (first(100), 34),
            (sparse.clone(), 4),
            (sparse, 2),
        ] {
            let graph = MaskGraph::harary(&set, k, &SALT, Round(1)).unwrap();
            assert_regular_symmetric(&graph, k);
        }
    }

    #[test]
    fn same_inputs_give_the_same_graph() {
        let set = first(20);
        let a = MaskGraph::harary(&set, 6, &SALT, Round(5)).unwrap();
        let b = MaskGraph::harary(&set, 6, &SALT, Round(5)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.ring(), b.ring());
    }

    #[test]
    fn round_set_and_salt_change_the_permutation() {
        for n in [10, 30] {
            let set = first(n);
            let base = MaskGraph::harary(&set, 4, &SALT, Round(1)).unwrap();
            let next_round = MaskGraph::harary(&set, 4, &SALT, Round(2)).unwrap();
            let other_salt = MaskGraph::harary(&set, 4, &[8; 32], Round(1)).unwrap();
            // The same ids plus one more: the first n positions must not keep their order.
            let bigger = MaskGraph::harary(&first(n + 1), 4, &SALT, Round(1)).unwrap();
            for (name, other) in [
                ("round", &next_round),
                ("salt", &other_salt),
                ("set", &bigger),
            ] {
                assert_ne!(base.ring(), other.ring(), "n = {n}: another {name}");
                let same_links = set
                    .iter()
                    .all(|p| base.neighbours(p) == other.neighbours(p));
                assert!(!same_links, "n = {n}: another {name} gave the same graph");
            }
        }
    }

    #[test]
    fn permutation_is_pinned() {
        // The ring is part of the protocol: a change here breaks every other implementation.
        let graph = MaskGraph::harary(&first(10), 4, &SALT, Round(3)).unwrap();
        let ring: Vec<u32> = graph.ring().iter().map(|p| p.0).collect();
        assert_eq!(ring, PINNED_RING);
    }

    const PINNED_RING: [u32; 10] = [8, 3, 9, 2, 7, 4, 0, 5, 1, 6];

    #[test]
    fn survives_removing_any_k_minus_1_parties() {
        for (n, k) in [(10, 4), (12, 6), (9, 2), (11, 8)] {
            let graph = MaskGraph::harary(&first(n), k, &SALT, Round(0)).unwrap();
            let ids: Vec<PartyId> = graph.set().iter().collect();
            for removed in subsets(&ids, k as usize - 1) {
                assert!(
                    connected_without(&graph, &removed),
                    "H({k}, {n}) minus {removed:?} is disconnected"
                );
            }
        }
    }

    #[test]
    fn some_k_parties_disconnect_it() {
        // Vertex connectivity is exactly k: rule (a) needs k > c + d, not k >= c + d.
        let graph = MaskGraph::harary(&first(10), 4, &SALT, Round(0)).unwrap();
        let ids: Vec<PartyId> = graph.set().iter().collect();
        let cut = subsets(&ids, 4)
            .into_iter()
            .find(|removed| !connected_without(&graph, removed));
        assert!(cut.is_some(), "no 4 parties disconnect H(4, 10)");
    }

    #[test]
    fn complete_when_k_at_least_n_minus_1() {
        for (n, k) in [
            (5, 4),
            (5, 5),
            (5, 100),
            (6, 5),
            (2, 1),
            (2, 2),
            (3, 2),
            (3, 7),
        ] {
            let graph = MaskGraph::harary(&first(n), k, &SALT, Round(9)).unwrap();
            assert_regular_symmetric(&graph, n - 1);
            for a in graph.set().iter() {
                for b in graph.set().iter().filter(|&b| b != a) {
                    assert!(graph.linked(a, b), "n = {n}, k = {k}: {a} and {b}");
                }
            }
        }
    }

    #[test]
    fn two_parties_are_each_others_neighbours() {
        let set = PartySet::new([PartyId(4), PartyId(1)]);
        let graph = MaskGraph::harary(&set, 2, &SALT, Round(0)).unwrap();
        assert_eq!(graph.neighbours(PartyId(1)), [PartyId(4)]);
        assert_eq!(graph.neighbours(PartyId(4)), [PartyId(1)]);
        assert_eq!(graph.degree(), 1);
        assert_eq!(graph.set(), &set);
    }

    #[test]
    fn outsiders_have_no_neighbours() {
        let graph = MaskGraph::harary(&first(10), 4, &SALT, Round(0)).unwrap();
        assert!(graph.neighbours(PartyId(10)).is_empty());
        assert!(!graph.linked(PartyId(10), PartyId(0)));
        assert!(!graph.linked(PartyId(0), PartyId(10)));
    }

    #[test]
    fn small_sets_zero_and_odd_degrees_are_refused() {
        let cases = [
            (
                PartySet::new([]),
                4,
                GraphError::TooFewParties { parties: 0 },
                "has 0",
            ),
            (
                first(1),
                4,
                GraphError::TooFewParties { parties: 1 },
                "has 1",
            ),
            (
                first(5),
                0,
                GraphError::NoNeighbours { parties: 5 },
                "0 over 5",
            ),
            (
                first(10),
                3,
                GraphError::OddDegree {
                    neighbours: 3,
                    parties: 10,
                },
                "H(3, 10)",
            ),
        ];
        for (set, k, expected, message) in cases {
            let err = MaskGraph::harary(&set, k, &SALT, Round(0)).unwrap_err();
            assert_eq!(err, expected);
            assert!(err.to_string().contains(message), "{err}");
        }
    }

    /// A generator replaying fixed words, to drive [`bounded`] through its rejections.
    struct Replay(std::vec::IntoIter<u64>);

    impl rand::RngCore for Replay {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }

        fn next_u64(&mut self) -> u64 {
            self.0.next().expect("the test gave enough words")
        }

        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(0);
        }
    }

    #[test]
    fn bounded_draws_reject_the_biased_tail() {
        // The limit is 2·⌊(2^64 − 1)/2⌋ = 2^64 − 2: 2^64 − 1 and 2^64 − 2 are rejected, and
        // 5 gives 1.
        let mut rng = Replay(vec![u64::MAX, u64::MAX - 1, 5].into_iter());
        assert_eq!(bounded(&mut rng, 2), 1);
        // 2^64 − 1 is a multiple of 3: only u64::MAX itself is rejected.
        let mut rng = Replay(vec![u64::MAX, u64::MAX - 1].into_iter());
        assert_eq!(bounded(&mut rng, 3), (u64::MAX - 1) % 3);
        // Bound 10: the limit is 2^64 − 6; 2^64 − 6 is rejected, 2^64 − 7 accepted.
        let mut rng = Replay(vec![u64::MAX - 5, u64::MAX - 6].into_iter());
        assert_eq!(bounded(&mut rng, 10), (u64::MAX - 6) % 10);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_harary_is_regular_symmetric_and_k_connected(
            n in 2u32..60,
            half in 1u32..30,
            round in any::<u64>(),
            first_arc in any::<proptest::sample::Index>(),
            second_arc in any::<proptest::sample::Index>(),
        ) {
            let k = 2 * half;
            let graph = MaskGraph::harary(&first(n), k, &SALT, Round(round)).unwrap();
            assert_regular_symmetric(&graph, k.min(n - 1));
            // k − 1 parties in two arcs of the ring: the shape of H(k, n)'s cuts of size k.
            let (n, degree) = (n as usize, graph.degree() as usize);
            let arc = |start: usize, len: usize| (0..len).map(move |i| (start + i) % n);
            let removed: BTreeSet<PartyId> = arc(first_arc.index(n), degree / 2)
                .chain(arc(second_arc.index(n), degree - 1 - degree / 2))
                .map(|p| graph.ring()[p])
                .collect();
            prop_assert!(connected_without(&graph, &removed), "removed {removed:?}");
        }
    }
}
