//! The server's book-keeping of `robust` secure aggregation: what it relays and what it
//! rebuilds, round by round, without any key. A transport (`hefl serve`, the in-process hub,
//! a Flower strategy) drives it with its own clock: it decides when a phase closes, the
//! coordinator checks every message and keeps what the next phase needs.
//!
//! Phases of round r, each closed by the caller:
//!
//! 1. **Adverts** ([`Coordinator::add_advert`]): each party's signed [`Advert`], verified on
//!    arrival (a party that sends a different advert for the same round is refused: its
//!    keys are drawn once). [`Coordinator::close_adverts`] fixes the advertisers (at least the
//!    roster's minimum) and the round's [`MaskGraph`] over them; every party gets the same
//!    set of advertisers, so every party computes the same graph, and its neighbours'
//!    adverts ([`Coordinator::adverts_for`]).
//! 2. **Shares** ([`Coordinator::add_shares`]): each advertiser's [`SealedShares`], exactly
//!    one to each of its neighbours. [`Coordinator::close_shares`] fixes the round's set S_r
//!    (the advertisers that shared; at least the minimum), and [`Coordinator::mailbox`] hands
//!    each member the messages of its neighbours in S_r.
//! 3. **Uploads**: the transport's [`Server`](crate::fl::Server) folds the sealed updates of
//!    S_r's members; the parties whose uploads are in the sum are A_r.
//! 4. **Unmask** ([`Coordinator::start_unmask`], [`Coordinator::add_response`]): every member
//!    of A_r gets the same [`UnmaskRequest`]; once [`Coordinator::ready`], the
//!    [`Coordinator::correction`] is added to the sum without a key and the round is
//!    published over A_r. If a secret cannot be rebuilt by the deadline, the round is void.
//!
//! Several rounds may be open at once (the adverts and shares of round r + 1 travel with
//! round r's traffic); [`Coordinator::forget_through`] drops what a published or void round
//! no longer needs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::blind::PartySet;
use super::graph::MaskGraph;
use super::robust::{
    Advert, RobustError, RoundUnmask, SealedShares, UnmaskRequest, UnmaskResponse, robust_policy,
};
use super::roster::{RobustPolicy, Roster};
use crate::fl::{PartyId, Round};

/// What the coordinator keeps of one round.
#[derive(Default)]
struct Book {
    adverts: BTreeMap<PartyId, Advert>,
    /// Fixed by [`Coordinator::close_adverts`].
    graph: Option<MaskGraph>,
    /// Every advertiser's messages, by sender.
    shares: BTreeMap<PartyId, Vec<SealedShares>>,
    /// S_r, fixed by [`Coordinator::close_shares`].
    set: Option<PartySet>,
    unmask: Option<RoundUnmask>,
}

/// The server's side of `robust` secure aggregation for one run (see the
/// [module docs](self)).
pub struct Coordinator {
    roster: Arc<Roster>,
    policy: RobustPolicy,
    min_parties: u32,
    salt: [u8; 32],
    rounds: BTreeMap<Round, Book>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("policy", &self.policy)
            .field(
                "rounds",
                &self.rounds.keys().map(|r| r.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// The coordinator of a run under `roster` (its policy must be robust) with the session
    /// `salt` every party derives ([`RobustParty::salt`](super::RobustParty::salt)).
    pub fn new(roster: Arc<Roster>, salt: [u8; 32]) -> Result<Self, RobustError> {
        let policy = robust_policy(&roster)?;
        if policy.consistency_check {
            return Err(RobustError::ConsistencyCheckUnsupported);
        }
        Ok(Self {
            min_parties: roster.policy().min_parties,
            roster,
            policy,
            salt,
            rounds: BTreeMap::new(),
        })
    }

    fn book(&self, round: Round) -> Result<&Book, RobustError> {
        self.rounds.get(&round).ok_or(RobustError::NotReady {
            round,
            step: "use a round",
            needs: "any advert of it arrived",
        })
    }

    fn closed_graph(&self, round: Round, step: &'static str) -> Result<&MaskGraph, RobustError> {
        self.book(round)?
            .graph
            .as_ref()
            .ok_or(RobustError::NotReady {
                round,
                step,
                needs: "the round's adverts closed",
            })
    }

    /// Takes a party's advert (verified against the roster). The same advert again is
    /// accepted; another one for the same round, or one after the adverts closed, refused.
    pub fn add_advert(&mut self, advert: Advert) -> Result<(), RobustError> {
        let round = advert.round;
        advert.verify(&self.roster, &self.salt, round)?;
        let book = self.rounds.entry(round).or_default();
        match book.adverts.get(&advert.party) {
            Some(before) if *before == advert => Ok(()),
            Some(_) => Err(RobustError::DuplicateParty {
                round,
                party: advert.party,
            }),
            None if book.graph.is_some() => Err(RobustError::OutOfOrder {
                round,
                party: advert.party,
                step: "advertise",
                needs: "the round's adverts closed (too late: it advertises for a later round)",
            }),
            None => {
                book.adverts.insert(advert.party, advert);
                Ok(())
            }
        }
    }

    /// Parties that advertised for `round` so far.
    pub fn advertisers(&self, round: Round) -> PartySet {
        self.rounds
            .get(&round)
            .map(|b| PartySet::new(b.adverts.keys().copied()))
            .unwrap_or_else(|| PartySet::new([]))
    }

    /// Closes `round`'s adverts: fixes the advertisers (at least the roster's minimum) and
    /// the graph over them, and returns the advertisers, the set every party computes the
    /// graph from (the same again if already closed). Each party then gets its neighbours'
    /// adverts ([`Coordinator::adverts_for`]).
    pub fn close_adverts(&mut self, round: Round) -> Result<PartySet, RobustError> {
        let (neighbours, min, salt) = (self.policy.neighbours, self.min_parties, self.salt);
        let book = self.rounds.entry(round).or_default();
        if book.graph.is_none() {
            let found = book.adverts.len() as u32;
            if found < min {
                return Err(RobustError::BelowMinParties {
                    round,
                    what: "adverts",
                    found,
                    min,
                });
            }
            let set = PartySet::new(book.adverts.keys().copied());
            let graph = MaskGraph::harary(&set, neighbours, &salt, round)
                .map_err(|source| RobustError::Graph { round, source })?;
            book.graph = Some(graph);
        }
        Ok(PartySet::new(book.adverts.keys().copied()))
    }

    /// The adverts `party` shares keys against: its neighbours' in the round's graph (after
    /// [`Coordinator::close_adverts`]).
    pub fn adverts_for(&self, round: Round, party: PartyId) -> Result<Vec<Advert>, RobustError> {
        let graph = self.closed_graph(round, "hand out adverts")?;
        let book = self.book(round)?;
        Ok(graph
            .neighbours(party)
            .iter()
            .filter_map(|p| book.adverts.get(p).copied())
            .collect())
    }

    /// Takes an advertiser's share messages for `round`: exactly one to each of its
    /// neighbours, each naming it as sender. The same messages again are accepted.
    pub fn add_shares(
        &mut self,
        round: Round,
        from: PartyId,
        messages: Vec<SealedShares>,
    ) -> Result<(), RobustError> {
        let graph = self.closed_graph(round, "take shares")?;
        let bad = |reason: String| RobustError::BadResponse {
            round,
            from,
            reason,
        };
        if !graph.set().contains(from) {
            return Err(RobustError::UnknownParty {
                round,
                party: from,
                set: graph.set().clone(),
            });
        }
        let mut receivers: Vec<PartyId> = messages.iter().map(|m| m.to).collect();
        receivers.sort_unstable();
        let neighbours = graph.neighbours(from);
        if receivers != neighbours {
            return Err(bad(format!(
                "shares for {receivers:?}, its neighbours are {neighbours:?}"
            )));
        }
        if let Some(m) = messages.iter().find(|m| m.round != round || m.from != from) {
            return Err(bad(format!("a message from {} for {}", m.from, m.round)));
        }
        let book = self.rounds.entry(round).or_default();
        if book.set.is_some() {
            return Err(RobustError::OutOfOrder {
                round,
                party: from,
                step: "share keys",
                needs: "the round's shares closed (too late: it advertises for a later round)",
            });
        }
        match book.shares.get(&from) {
            Some(before) if *before == messages => Ok(()),
            Some(_) => Err(RobustError::DuplicateParty { round, party: from }),
            None => {
                book.shares.insert(from, messages);
                Ok(())
            }
        }
    }

    /// Closes `round`'s shares: the round's set S_r is the advertisers that shared (at least
    /// the roster's minimum; the same set again if already closed).
    pub fn close_shares(&mut self, round: Round) -> Result<PartySet, RobustError> {
        self.closed_graph(round, "close shares")?;
        let min = self.min_parties;
        let book = self.rounds.entry(round).or_default();
        if let Some(set) = &book.set {
            return Ok(set.clone());
        }
        let set = PartySet::new(book.shares.keys().copied());
        if set.len() < min {
            return Err(RobustError::BelowMinParties {
                round,
                what: "parties that shared keys",
                found: set.len(),
                min,
            });
        }
        book.set = Some(set.clone());
        Ok(set)
    }

    /// The round's set S_r, once its shares closed.
    pub fn set(&self, round: Round) -> Option<&PartySet> {
        self.rounds.get(&round).and_then(|b| b.set.as_ref())
    }

    /// The share messages addressed to `to` from the members of S_r (after
    /// [`Coordinator::close_shares`]).
    pub fn mailbox(&self, round: Round, to: PartyId) -> Result<Vec<SealedShares>, RobustError> {
        let book = self.book(round)?;
        let set = book.set.as_ref().ok_or(RobustError::OutOfOrder {
            round,
            party: to,
            step: "fetch shares",
            needs: "the round's shares have not closed yet",
        })?;
        Ok(book
            .shares
            .iter()
            .filter(|(from, _)| set.contains(**from))
            .flat_map(|(_, messages)| messages.iter().filter(|m| m.to == to).cloned())
            .collect())
    }

    /// Starts `round`'s unmask step over the parties whose uploads are in the sum (`alive`,
    /// a subset of S_r of at least the minimum) and returns the request each of them is sent.
    pub fn start_unmask(
        &mut self,
        round: Round,
        alive: PartySet,
    ) -> Result<UnmaskRequest, RobustError> {
        let (policy, min, salt) = (self.policy, self.min_parties, self.salt);
        let book = self.rounds.entry(round).or_default();
        if let Some(unmask) = &book.unmask {
            return Ok(unmask.request());
        }
        let (Some(graph), Some(set)) = (&book.graph, &book.set) else {
            return Err(RobustError::NotReady {
                round,
                step: "unmask",
                needs: "the round's adverts and shares closed",
            });
        };
        let unmask = RoundUnmask::from_verified(
            (policy, min),
            salt,
            round,
            (book.adverts.clone(), graph.clone()),
            set.clone(),
            alive,
        )?;
        let request = unmask.request();
        book.unmask = Some(unmask);
        Ok(request)
    }

    fn unmask_mut(&mut self, round: Round) -> Result<&mut RoundUnmask, RobustError> {
        self.rounds
            .get_mut(&round)
            .and_then(|b| b.unmask.as_mut())
            .ok_or(RobustError::NotReady {
                round,
                step: "take an unmask response",
                needs: "the round's unmask step started",
            })
    }

    /// Takes `from`'s unmask response for `round` (see [`RoundUnmask::add_response`]).
    pub fn add_response(
        &mut self,
        round: Round,
        from: PartyId,
        response: UnmaskResponse,
    ) -> Result<(), RobustError> {
        self.unmask_mut(round)?.add_response(from, response)
    }

    /// Whether `round`'s correction can be computed: every secret it needs has T shares.
    pub fn ready(&self, round: Round) -> bool {
        self.rounds
            .get(&round)
            .and_then(|b| b.unmask.as_ref())
            .is_some_and(RoundUnmask::ready)
    }

    /// Whether every alive party answered `round`'s unmask request (nothing more to wait for).
    pub fn all_answered(&self, round: Round) -> bool {
        self.rounds
            .get(&round)
            .and_then(|b| b.unmask.as_ref())
            .is_some_and(|u| u.answered() == *u.alive())
    }

    /// `round`'s public correction for a sum of `len` words at `total_bits` (see
    /// [`RoundUnmask::correction`]); an error means the round is void.
    pub fn correction(
        &self,
        round: Round,
        len: usize,
        total_bits: u32,
    ) -> Result<Vec<u64>, RobustError> {
        self.rounds
            .get(&round)
            .and_then(|b| b.unmask.as_ref())
            .ok_or(RobustError::NotReady {
                round,
                step: "correct the sum",
                needs: "the round's unmask step started",
            })?
            .correction(len, total_bits)
    }

    /// What the coordinator keeps, for the server's checkpoint (see
    /// [`CoordinatorCheckpoint`]).
    pub fn checkpoint(&self) -> CoordinatorCheckpoint {
        let rounds = self
            .rounds
            .iter()
            .map(|(round, book)| BookRecord {
                round: round.0,
                adverts: book
                    .adverts
                    .values()
                    .map(|a| a.to_bytes().to_vec())
                    .collect(),
                adverts_closed: book.graph.is_some(),
                shares: book
                    .shares
                    .iter()
                    .map(|(p, m)| (p.0, m.iter().map(SealedShares::to_bytes).collect()))
                    .collect(),
                set: book.set.as_ref().map(|s| s.iter().map(|p| p.0).collect()),
                alive: book
                    .unmask
                    .as_ref()
                    .map(|u| u.alive().iter().map(|p| p.0).collect()),
                responses: book
                    .unmask
                    .as_ref()
                    .map(|u| {
                        u.responses()
                            .iter()
                            .map(|(p, r)| (p.0, r.to_bytes()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        CoordinatorCheckpoint {
            salt: self.salt,
            rounds,
        }
    }

    /// The coordinator of a checkpoint, every message checked again as when it first came
    /// (a checkpoint of another run or roster, or altered, is refused).
    pub fn restore(
        roster: Arc<Roster>,
        salt: [u8; 32],
        checkpoint: &CoordinatorCheckpoint,
    ) -> Result<Self, RobustError> {
        if checkpoint.salt != salt {
            return Err(RobustError::Malformed {
                what: "coordinator checkpoint",
                reason: "it is of another run or roster".into(),
            });
        }
        let mut coordinator = Self::new(roster, salt)?;
        for record in &checkpoint.rounds {
            let round = Round(record.round);
            for advert in &record.adverts {
                coordinator.add_advert(Advert::from_bytes(advert)?)?;
            }
            if record.adverts_closed {
                coordinator.close_adverts(round)?;
            }
            for (from, messages) in &record.shares {
                let messages = messages
                    .iter()
                    .map(|m| SealedShares::from_bytes(m))
                    .collect::<Result<_, _>>()?;
                coordinator.add_shares(round, PartyId(*from), messages)?;
            }
            if let Some(set) = &record.set {
                let closed = coordinator.close_shares(round)?;
                if closed != PartySet::new(set.iter().copied().map(PartyId)) {
                    return Err(RobustError::Malformed {
                        what: "coordinator checkpoint",
                        reason: format!("{round}: its set is not the parties that shared"),
                    });
                }
            }
            if let Some(alive) = &record.alive {
                coordinator
                    .start_unmask(round, PartySet::new(alive.iter().copied().map(PartyId)))?;
                for (from, response) in &record.responses {
                    let response = UnmaskResponse::from_bytes(response)?;
                    coordinator.add_response(round, PartyId(*from), response)?;
                }
            }
        }
        Ok(coordinator)
    }

    /// Drops everything kept of rounds up to `round` (published or void).
    pub fn forget_through(&mut self, round: Round) {
        self.rounds.retain(|r, _| *r > round);
    }
}

/// One round of a [`CoordinatorCheckpoint`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BookRecord {
    round: u64,
    adverts: Vec<Vec<u8>>,
    adverts_closed: bool,
    shares: Vec<(u32, Vec<Vec<u8>>)>,
    set: Option<Vec<u32>>,
    alive: Option<Vec<u32>>,
    responses: Vec<(u32, Vec<u8>)>,
}

impl Drop for BookRecord {
    fn drop(&mut self) {
        // Revealed shares: the server rebuilds secrets from them, and needs them no longer
        // once the round is published or void.
        for (_, response) in &mut self.responses {
            response.zeroize();
        }
    }
}

/// What a [`Coordinator`] keeps, for the server's checkpoint: every round's adverts, share
/// messages (sealed to their receivers), set, alive parties and unmask responses, so that a
/// restarted server finishes an open round's unmask step. The responses hold revealed
/// shares (wiped on drop): write it only to a private file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorCheckpoint {
    salt: [u8; 32],
    rounds: Vec<BookRecord>,
}

impl fmt::Debug for CoordinatorCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorCheckpoint")
            .field(
                "rounds",
                &self.rounds.iter().map(|r| r.round).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
