//! `robust` secure aggregation (`hefl::secagg::RobustParty`, `RoundUnmask`): the published
//! sum is exact over the parties that submitted, whatever phase the others dropped at; the
//! server's correction is exact and adds no noise; every unmask refusal of the design note's
//! §7 is a typed error; a bad share is caught and routed around; messages that are not the
//! round's are refused.

use std::sync::{Arc, OnceLock};

use hefl::fl::{Encoding, PartyId, Round, Weighting};
use hefl::he::keys::{KeyFile, SecretKey};
use hefl::he::{CompactVector, DownloadForm, Widths};
use hefl::quant::FixedPoint;
use hefl::secagg::{
    Advert, Coordinator, Identity, Mode, PartySet, Policy, Reveal, RobustError, RobustParty,
    RobustPolicy, Roster, RoundUnmask, SealedShares, UnmaskRequest, UnmaskResponse,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The run's fingerprint.
const RUN: [u8; 32] = [0x6b; 32];

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| KeyFile::from_seed([12; 32]).secret_key().expect("key"))
}

/// `parties` identities from fixed seeds.
fn identities(parties: u32) -> Vec<Arc<Identity>> {
    (0..parties)
        .map(|i| {
            let mut bytes = [0u8; 32];
            bytes[4..8].copy_from_slice(&i.to_le_bytes());
            bytes[31] = 0x55;
            Arc::new(Identity::from_secret_bytes(bytes))
        })
        .collect()
}

/// A robust roster of `parties` tolerating `colluders` and `dropouts` (rule (a)), and every
/// party's side.
fn federation(parties: u32, colluders: u32, dropouts: u32) -> (Arc<Roster>, Vec<RobustParty>) {
    federation_with_min(parties, colluders, dropouts, 0)
}

/// As [`federation`], with at least `min` parties in a sum (0: rule (a)'s P − d).
fn federation_with_min(
    parties: u32,
    colluders: u32,
    dropouts: u32,
    min: u32,
) -> (Arc<Roster>, Vec<RobustParty>) {
    let ids = identities(parties);
    let (robust, rule_min) =
        RobustPolicy::rule_a(parties, colluders, dropouts, None, None, false).expect("rule (a)");
    let min_parties = if min == 0 { rule_min } else { min };
    let policy = Policy {
        mode: Mode::Robust(robust),
        parties,
        min_parties,
    };
    let roster = Arc::new(
        Roster::new_signed(
            key().key_id(),
            ids.iter().map(|id| id.public()).collect(),
            ids.iter().map(|id| id.signing_public()).collect(),
            policy,
        )
        .expect("roster"),
    );
    let sides = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            RobustParty::new(Arc::clone(id), PartyId(i as u32), Arc::clone(&roster), RUN)
                .expect("party")
        })
        .collect();
    (roster, sides)
}

/// The parties of `adverts`: the advertisers every party computes a round's graph from.
fn advertisers(adverts: &[Advert]) -> PartySet {
    PartySet::new(adverts.iter().map(|a| a.party))
}

/// Every advert of a round whose adverts closed, from the coordinator's hand-outs (each
/// party's neighbours' adverts).
fn all_adverts(coordinator: &Coordinator, round: Round, set: &PartySet) -> Vec<Advert> {
    let mut by_party = std::collections::BTreeMap::new();
    for party in set.iter() {
        for advert in coordinator.adverts_for(round, party).expect("adverts") {
            by_party.insert(advert.party, advert);
        }
    }
    by_party.into_values().collect()
}

/// Where a party drops out of a round.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Drop {
    /// Stays to the end.
    Never,
    /// After advertising, before sharing keys: not in the round's set.
    BeforeSharing,
    /// In the set, but its upload never arrives: dead, its blind secret is rebuilt.
    BeforeSubmitting,
    /// Submitted, then silent at the unmask step: alive, its seed is rebuilt.
    AtUnmask,
}

/// What one round of the protocol gave.
struct Outcome {
    set: PartySet,
    alive: PartySet,
    /// The plaintext sum of the alive parties' encoded words.
    expected: Vec<u64>,
    /// The corrected, decrypted sum (canaries included), or why the round is void.
    sum: Result<Vec<u64>, RobustError>,
}

/// Runs `round` with every party's `drops`, in memory, through the server's
/// [`Coordinator`]: it relays adverts and shares, the uploads are folded as compact
/// ciphertexts, and it unmasks and corrects the sum without a key.
fn run_round(
    sides: &mut [RobustParty],
    roster: &Arc<Roster>,
    round: Round,
    drops: &[Drop],
    encoding: &Encoding,
    rng: &mut ChaCha8Rng,
    len: usize,
) -> Outcome {
    let fp = *encoding.fixed_point();
    let mut coordinator =
        Coordinator::new(Arc::clone(roster), sides[0].salt()).expect("coordinator");
    for side in sides.iter_mut() {
        coordinator
            .add_advert(side.advertise(round).expect("advertise"))
            .expect("advert taken");
    }
    let advertisers = coordinator.close_adverts(round).expect("adverts closed");
    for (i, side) in sides.iter_mut().enumerate() {
        // Each party gets the advertisers and its neighbours' adverts only.
        let theirs = coordinator
            .adverts_for(round, PartyId(i as u32))
            .expect("neighbours' adverts");
        let sent = side
            .share_keys(round, &advertisers, &theirs)
            .expect("share keys");
        if drops[i] != Drop::BeforeSharing {
            coordinator
                .add_shares(round, PartyId(i as u32), sent)
                .expect("shares taken");
        }
    }
    let set = coordinator.close_shares(round).expect("shares closed");
    let widths = Widths::new(
        fp.params().total_bits,
        roster.policy().parties,
        DownloadForm::Seeds,
    )
    .expect("widths");
    let mut expected = vec![0u64; len + 1];
    let mut sum: Option<CompactVector> = None;
    let mut alive = Vec::new();
    for party in set.iter() {
        let side = &mut sides[party.0 as usize];
        let mine = coordinator.mailbox(round, party).expect("mailbox");
        side.receive_shares(round, &set, &mine)
            .expect("receive shares");
        let values: Vec<f32> = (0..len).map(|_| rng.random_range(-9.0f32..9.0)).collect();
        let words = encoding.encode(&values, 64, rng).expect("encode").words;
        let sealed = side.seal(words.clone(), &fp, key(), round).expect("seal");
        if drops[party.0 as usize] == Drop::BeforeSubmitting {
            continue;
        }
        expected
            .iter_mut()
            .zip(&words)
            .for_each(|(e, w)| *e = e.wrapping_add(*w));
        let ct = key()
            .prepare(sealed.len())
            .expect("prepare")
            .seal(&sealed, &widths)
            .expect("encrypt");
        match sum.as_mut() {
            None => sum = Some(ct),
            Some(s) => s.add_assign(&ct).expect("fold"),
        }
        alive.push(party);
    }
    let alive = PartySet::new(alive);
    let request = coordinator
        .start_unmask(round, alive.clone())
        .expect("unmask started");
    for party in alive.iter() {
        if drops[party.0 as usize] == Drop::AtUnmask {
            continue;
        }
        let answer = sides[party.0 as usize].unmask(&request).expect("answer");
        let bytes = answer.to_bytes();
        let parsed = UnmaskResponse::from_bytes(&bytes).expect("parse response");
        coordinator
            .add_response(round, party, parsed)
            .expect("response accepted");
    }
    let mut sum = sum.expect("someone submitted");
    let corrected = coordinator
        .correction(
            round,
            len + 1 + hefl::secagg::CANARY_SLOTS,
            fp.params().total_bits,
        )
        .map(|c| {
            sum.add_public(&c).expect("on the grid");
            key().decrypt(&sum.expand()).expect("decrypt")
        });
    Outcome {
        set,
        alive,
        expected,
        sum: corrected,
    }
}

fn encoding(parties: u32) -> Encoding {
    Encoding::new(8.0, 16, parties, Weighting::Fraction { nominal: 64 }).expect("encoding")
}

/// Parties, colluders and dropouts tolerated, and who drops where.
type Case = (u32, u32, u32, Vec<(usize, Drop)>);

#[test]
fn sums_are_exact_with_no_dropouts_and_with_dropouts_at_every_phase() {
    let len = 3000;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    // (parties, colluders, dropouts, who drops where)
    let cases: Vec<Case> = vec![
        (4, 1, 1, vec![]),
        (10, 3, 3, vec![]),
        (10, 3, 3, vec![(2, Drop::BeforeSubmitting)]),
        (10, 3, 3, vec![(5, Drop::AtUnmask)]),
        (10, 3, 3, vec![(0, Drop::BeforeSharing)]),
        // A dead party and a silent neighbour, and one more gone before sharing.
        (
            10,
            3,
            3,
            vec![
                (3, Drop::BeforeSubmitting),
                (4, Drop::AtUnmask),
                (9, Drop::BeforeSharing),
            ],
        ),
        (
            30,
            4,
            4,
            vec![
                (1, Drop::BeforeSubmitting),
                (7, Drop::BeforeSubmitting),
                (8, Drop::AtUnmask),
                (29, Drop::AtUnmask),
            ],
        ),
    ];
    for (parties, c, d, dropped) in cases {
        let (roster, mut sides) = federation(parties, c, d);
        let enc = encoding(parties);
        let fp = *enc.fixed_point();
        let mut drops = vec![Drop::Never; parties as usize];
        for (i, drop) in &dropped {
            drops[*i] = *drop;
        }
        for round in [Round(0), Round(1)] {
            let out = run_round(&mut sides, &roster, round, &drops, &enc, &mut rng, len);
            let sum = out
                .sum
                .unwrap_or_else(|e| panic!("P = {parties}, {dropped:?}: {e}"));
            // Every party in the set opens the same sum; it names the alive parties.
            for party in out.set.iter() {
                let opened = sides[party.0 as usize]
                    .open(&sum, &fp, key(), round, &out.alive)
                    .unwrap_or_else(|e| panic!("{party} refused: {e}"));
                assert_eq!(
                    fp.decode_integers(opened),
                    fp.decode_integers(&out.expected),
                    "P = {parties}, {round}, drops {dropped:?}: the sum over {}",
                    out.alive
                );
            }
            sides.iter_mut().for_each(|s| s.forget_through(round));
        }
    }
}

#[test]
fn more_dropouts_than_the_policy_tolerates_void_the_round_not_the_run() {
    // P = 10, c = 3, d = 1: k = 6, T = 4, at least 9 in a sum. Party 0 is dead and three of
    // its six neighbours go silent at the unmask step: only three holders of its blind
    // secret answer, fewer than T.
    let (roster, mut sides) = federation(10, 3, 1);
    let enc = encoding(10);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let all = PartySet::new((0..10).map(PartyId));
    let graph = hefl::secagg::MaskGraph::harary(&all, 6, &sides[0].salt(), Round(0)).unwrap();
    let mut drops = vec![Drop::Never; 10];
    drops[0] = Drop::BeforeSubmitting;
    for p in &graph.neighbours(PartyId(0))[..3] {
        drops[p.0 as usize] = Drop::AtUnmask;
    }
    let out = run_round(&mut sides, &roster, Round(0), &drops, &enc, &mut rng, 200);
    match out.sum {
        Err(RobustError::TooFewShares {
            found, threshold, ..
        }) => assert!(
            found < threshold && threshold == 4,
            "{found} of {threshold}"
        ),
        other => panic!("expected TooFewShares, got {:?}", other.map(|_| ())),
    }
    // The run continues: the next round, with everyone, is exact.
    sides.iter_mut().for_each(|s| s.forget_through(Round(0)));
    let out = run_round(
        &mut sides,
        &roster,
        Round(1),
        &[Drop::Never; 10],
        &enc,
        &mut rng,
        200,
    );
    let fp = *enc.fixed_point();
    let sum = out.sum.expect("round 1");
    let opened = sides[1]
        .open(&sum, &fp, key(), Round(1), &out.alive)
        .unwrap();
    assert_eq!(
        fp.decode_integers(opened),
        fp.decode_integers(&out.expected)
    );
}

#[test]
fn the_correction_adds_no_noise_and_keeps_the_compact_grid() {
    let fp = *encoding(10).fixed_point();
    let t = fp.params().total_bits;
    let widths = Widths::new(t, 10, DownloadForm::Seeds).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let words: Vec<u64> = (0..4096)
        .map(|_| fp.to_plaintext(rng.random_range(-1000..1000)))
        .collect();
    let mut ct = key()
        .prepare(words.len())
        .unwrap()
        .seal(&words, &widths)
        .unwrap();
    let before = key().decrypt(&ct.expand()).unwrap();
    let correction: Vec<u64> = (0..words.len())
        .map(|_| rng.random::<u64>() & (u64::MAX << (64 - t)))
        .collect();
    ct.add_public(&correction).unwrap();
    let after = key().decrypt(&ct.expand()).unwrap();
    // Decrypted after = decrypted before + correction, word for word: the noise is the same.
    for ((a, b), c) in after.iter().zip(&before).zip(&correction) {
        assert_eq!(*a, b.wrapping_add(*c));
    }
    // The bodies stay on their grid: the ciphertext still serializes and parses.
    let bytes = hefl::fl::Summable::to_bytes(&ct);
    assert!(!bytes.is_empty());
    // A word off the grid is refused and changes nothing.
    let mut off = correction.clone();
    off[17] |= 1;
    let snapshot = ct.clone();
    assert!(ct.add_public(&off).is_err());
    assert_eq!(ct, snapshot);
}

/// Runs R0 to R2 of round 0 for everyone and returns the unmask request with everyone alive.
fn ready_to_unmask(sides: &mut [RobustParty], len: usize) -> (Vec<Advert>, PartySet) {
    let enc = encoding(sides.len() as u32);
    let fp = *enc.fixed_point();
    let adverts: Vec<Advert> = sides
        .iter_mut()
        .map(|s| s.advertise(Round(0)).unwrap())
        .collect();
    let shares: Vec<SealedShares> = sides
        .iter_mut()
        .flat_map(|s| {
            s.share_keys(Round(0), &advertisers(&adverts), &adverts)
                .unwrap()
        })
        .collect();
    let set = PartySet::new((0..sides.len() as u32).map(PartyId));
    for (i, side) in sides.iter_mut().enumerate() {
        let mine: Vec<SealedShares> = shares
            .iter()
            .filter(|m| m.to.0 == i as u32)
            .cloned()
            .collect();
        side.receive_shares(Round(0), &set, &mine).unwrap();
        side.seal(vec![0; len], &fp, key(), Round(0)).unwrap();
    }
    (adverts, set)
}

#[test]
fn unmask_requests_are_refused_by_fcps_rules_and_never_both() {
    // P = 10, c = 3, d = 3: T = 4, k = 8, min 7.
    let (_, mut sides) = federation(10, 3, 3);
    let (_, set) = ready_to_unmask(&mut sides, 10);
    let without =
        |set: &PartySet, gone: &[PartyId]| PartySet::new(set.iter().filter(|p| !gone.contains(p)));
    let request = |alive: PartySet| UnmaskRequest {
        round: Round(0),
        alive,
    };
    // Listed dead itself.
    let err = sides[2]
        .unmask(&request(without(&set, &[PartyId(2)])))
        .unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::ListedDead {
                party: PartyId(2),
                ..
            }
        ),
        "{err}"
    );
    // An unknown party.
    let with_42 = PartySet::new(set.iter().chain([PartyId(42)]));
    let err = sides[1].unmask(&request(with_42)).unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::UnknownParty {
                party: PartyId(42),
                ..
            }
        ),
        "{err}"
    );
    // A duplicate, on the wire.
    let mut bytes = request(set.clone()).to_bytes();
    bytes[8..12].copy_from_slice(&11u32.to_le_bytes());
    bytes.extend_from_slice(&9u32.to_le_bytes());
    let err = UnmaskRequest::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::DuplicateParty {
                party: PartyId(9),
                ..
            }
        ),
        "{err}"
    );
    // Below the roster's minimum (10 - 3 = 7).
    let four: Vec<PartyId> = [5, 6, 7, 8].map(PartyId).to_vec();
    let err = sides[0].unmask(&request(without(&set, &four))).unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::BelowMinParties {
                found: 6,
                min: 7,
                ..
            }
        ),
        "{err}"
    );
    // Refused requests leave nothing answered: party 0 answers the whole set, and an
    // identical repeat (a lost reply) gets identical bytes.
    let first = sides[0]
        .unmask(&request(set.clone()))
        .expect("first answer");
    assert_eq!(first.shares.len(), 8);
    assert!(
        first
            .shares
            .iter()
            .all(|(_, kind, _)| *kind == Reveal::SelfSeed)
    );
    let again = sides[0]
        .unmask(&request(set.clone()))
        .expect("same request");
    assert_eq!(again.to_bytes(), first.to_bytes());
    // A request calling one of its neighbours dead now: it already revealed that
    // neighbour's seed share, so it refuses to reveal its blind-secret share (never both).
    let graph = hefl::secagg::MaskGraph::harary(&set, 8, &sides[0].salt(), Round(0)).unwrap();
    let neighbour = graph.neighbours(PartyId(0))[0];
    let err = sides[0]
        .unmask(&request(without(&set, &[neighbour])))
        .unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::ConflictingReveal {
                revealed: Reveal::SelfSeed,
                asked: Reveal::BlindSecret,
                ..
            }
        ),
        "{err}"
    );
    // A different request that asks nothing new of any neighbour (it drops party 0's one
    // non-neighbour): refused all the same, a round is answered once.
    let stranger = set
        .iter()
        .find(|p| *p != PartyId(0) && !graph.linked(PartyId(0), *p))
        .expect("k = 8 of 9: one non-neighbour");
    let err = sides[0]
        .unmask(&request(without(&set, &[stranger])))
        .unwrap_err();
    assert!(matches!(err, RobustError::AlreadyAnswered { .. }), "{err}");

    // Too few alive neighbours: with a roster whose minimum is low (c + 2 = 3), a request
    // may keep enough parties and still leave a party fewer than T = 2 alive neighbours.
    let (_, mut low) = federation_with_min(10, 1, 3, 3); // k = 6, T = 2
    let (_, set) = ready_to_unmask(&mut low, 10);
    let graph = hefl::secagg::MaskGraph::harary(&set, 6, &low[0].salt(), Round(0)).unwrap();
    let gone: Vec<PartyId> = graph.neighbours(PartyId(5))[1..].to_vec();
    let err = low[5].unmask(&request(without(&set, &gone))).unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::TooFewAlive {
                alive: 1,
                threshold: 2,
                ..
            }
        ),
        "{err}"
    );
    // Negative control: with two alive neighbours it answers.
    let gone: Vec<PartyId> = graph.neighbours(PartyId(5))[2..].to_vec();
    low[5]
        .unmask(&request(without(&set, &gone)))
        .expect("T alive neighbours");
}

#[test]
fn adverts_and_shares_that_are_not_the_rounds_are_refused() {
    let (roster, mut sides) = federation(4, 1, 1);
    let adverts: Vec<Advert> = sides
        .iter_mut()
        .map(|s| s.advertise(Round(3)).unwrap())
        .collect();
    let salt = sides[0].salt();
    // A tampered advert (a key swapped by a relaying server) fails its signature.
    let mut tampered = adverts.clone();
    tampered[2].blind = adverts[1].blind;
    let err = sides[0]
        .share_keys(Round(3), &advertisers(&tampered), &tampered)
        .unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::BadSignature {
                party: PartyId(2),
                ..
            }
        ),
        "{err}"
    );
    // Negative control: the untampered adverts verify.
    for a in &adverts {
        a.verify(&roster, &salt, Round(3)).expect("genuine advert");
    }
    // Another round's advert.
    let err = adverts[1].verify(&roster, &salt, Round(4)).unwrap_err();
    assert!(matches!(err, RobustError::WrongRound { .. }), "{err}");
    // Another run (another salt): the signature does not carry over.
    let err = adverts[1].verify(&roster, &[0; 32], Round(3)).unwrap_err();
    assert!(matches!(err, RobustError::BadSignature { .. }), "{err}");
    // Own advert replaced.
    let mut swapped = adverts.clone();
    swapped[0] = adverts[0];
    swapped.remove(0);
    let err = sides[0]
        .share_keys(Round(3), &advertisers(&swapped), &swapped)
        .unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::OwnAdvert { .. } | RobustError::BelowMinParties { .. }
        ),
        "{err}"
    );
    // Shares: a flipped byte fails authentication.
    let shares: Vec<SealedShares> = sides
        .iter_mut()
        .flat_map(|s| {
            s.share_keys(Round(3), &advertisers(&adverts), &adverts)
                .unwrap()
        })
        .collect();
    let set = PartySet::new((0..4).map(PartyId));
    let mut mine: Vec<SealedShares> = shares
        .iter()
        .filter(|m| m.to == PartyId(1))
        .cloned()
        .collect();
    mine[0].ciphertext[5] ^= 1;
    let err = sides[1].receive_shares(Round(3), &set, &mine).unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::BadShares {
                reason: "authentication failed",
                ..
            }
        ),
        "{err}"
    );
    // A message for another receiver.
    let theirs: Vec<SealedShares> = shares
        .iter()
        .filter(|m| m.to == PartyId(2))
        .cloned()
        .collect();
    let err = sides[1]
        .receive_shares(Round(3), &set, &theirs)
        .unwrap_err();
    assert!(matches!(err, RobustError::BadShares { .. }), "{err}");
    // Wire round trips.
    for m in &shares {
        assert_eq!(SealedShares::from_bytes(&m.to_bytes()).unwrap(), *m);
        assert_eq!(m.to_bytes().len(), hefl::secagg::SEALED_SHARES_BYTES);
    }
    for a in &adverts {
        assert_eq!(Advert::from_bytes(&a.to_bytes()).unwrap(), *a);
    }
    assert!(Advert::from_bytes(&adverts[0].to_bytes()[..100]).is_err());
}

#[test]
fn a_bad_share_is_detected_and_another_subset_recovers() {
    // P = 10, c = 3, d = 3: T = 4, k = 8. Party 2 is dead; a colluding holder corrupts its
    // share of party 2's blind secret: the check against the advert catches it, another
    // subset of shares rebuilds the secret, and the sum is exact.
    let (roster, mut sides) = federation(10, 3, 3);
    let enc = encoding(10);
    let fp = *enc.fixed_point();
    let len = 500;
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let adverts: Vec<Advert> = sides
        .iter_mut()
        .map(|s| s.advertise(Round(0)).unwrap())
        .collect();
    let shares: Vec<SealedShares> = sides
        .iter_mut()
        .flat_map(|s| {
            s.share_keys(Round(0), &advertisers(&adverts), &adverts)
                .unwrap()
        })
        .collect();
    let set = PartySet::new((0..10).map(PartyId));
    let widths = Widths::new(fp.params().total_bits, 10, DownloadForm::Seeds).unwrap();
    let mut sum: Option<CompactVector> = None;
    let mut expected = vec![0u64; len + 1];
    for (i, side) in sides.iter_mut().enumerate() {
        let mine: Vec<SealedShares> = shares
            .iter()
            .filter(|m| m.to.0 == i as u32)
            .cloned()
            .collect();
        side.receive_shares(Round(0), &set, &mine).unwrap();
        let values: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let words = enc.encode(&values, 64, &mut rng).unwrap().words;
        let sealed = side.seal(words.clone(), &fp, key(), Round(0)).unwrap();
        if i == 2 {
            continue;
        }
        expected
            .iter_mut()
            .zip(&words)
            .for_each(|(e, w)| *e = e.wrapping_add(*w));
        let ct = key()
            .prepare(sealed.len())
            .unwrap()
            .seal(&sealed, &widths)
            .unwrap();
        match sum.as_mut() {
            None => sum = Some(ct),
            Some(s) => s.add_assign(&ct).unwrap(),
        }
    }
    let alive = PartySet::new((0..10).filter(|&i| i != 2).map(PartyId));
    let mut unmask = RoundUnmask::new(
        &roster,
        sides[0].salt(),
        Round(0),
        &adverts,
        set,
        alive.clone(),
    )
    .unwrap();
    let request = unmask.request();
    let mut corrupted = 0;
    for party in alive.iter() {
        let mut answer = sides[party.0 as usize].unmask(&request).unwrap();
        if corrupted == 0
            && let Some(entry) = answer.shares.iter_mut().find(|(t, _, _)| *t == PartyId(2))
        {
            let mut bytes = entry.2.to_bytes();
            bytes[3] ^= 0x5a;
            entry.2 = hefl::secagg::Share::from_bytes(&bytes, 32).unwrap();
            corrupted += 1;
        }
        unmask.add_response(party, answer).unwrap();
    }
    assert_eq!(corrupted, 1, "one holder of party 2's share corrupted it");
    let correction = unmask
        .correction(len + 3, fp.params().total_bits)
        .expect("recovered");
    let mut sum = sum.unwrap();
    sum.add_public(&correction).unwrap();
    let plain = key().decrypt(&sum.expand()).unwrap();
    let opened = sides[0].open(&plain, &fp, key(), Round(0), &alive).unwrap();
    assert_eq!(fp.decode_integers(opened), fp.decode_integers(&expected));
    // A response whose share takes another holder's x is refused (it could not otherwise
    // spoil more than its own share).
    let mut unmask2 = RoundUnmask::new(
        &roster,
        sides[0].salt(),
        Round(0),
        &adverts,
        PartySet::new((0..10).map(PartyId)),
        alive.clone(),
    )
    .unwrap();
    let mut answer = sides[1].unmask(&unmask2.request()).unwrap();
    let mut bytes = answer.shares[0].2.to_bytes();
    bytes[0] = if bytes[0] == 1 { 2 } else { 1 };
    answer.shares[0].2 =
        hefl::secagg::Share::from_bytes(&bytes, answer.shares[0].2.to_bytes().len() - 1).unwrap();
    let err = unmask2.add_response(PartyId(1), answer).unwrap_err();
    assert!(matches!(err, RobustError::BadResponse { .. }), "{err}");
    // A response for another round or from a dead party is refused.
    let err = unmask
        .add_response(
            PartyId(2),
            UnmaskResponse {
                round: Round(0),
                from: PartyId(2),
                shares: vec![],
            },
        )
        .unwrap_err();
    assert!(matches!(err, RobustError::BadResponse { .. }), "{err}");
}

#[test]
fn canaries_refuse_a_sum_the_server_did_not_unmask() {
    let (roster, mut sides) = federation(4, 1, 1);
    let enc = encoding(4);
    let fp = *enc.fixed_point();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let out = run_round(
        &mut sides,
        &roster,
        Round(0),
        &[Drop::Never; 4],
        &enc,
        &mut rng,
        100,
    );
    let sum = out.sum.expect("exact");
    // The correct sum opens; a sum listing other parties does not.
    sides[0]
        .open(&sum, &fp, key(), Round(0), &out.alive)
        .expect("the round's sum");
    let fewer = PartySet::new([PartyId(0), PartyId(1), PartyId(2)]);
    assert!(sides[0].open(&sum, &fp, key(), Round(0), &fewer).is_err());
    // Another round's canary tag.
    assert!(
        sides[3]
            .open(&sum, &fp, key(), Round(1), &out.alive)
            .is_err()
    );
}

#[test]
fn a_round_is_sealed_once_and_its_secrets_are_forgotten() {
    let (_, mut sides) = federation(4, 1, 1);
    let _ = ready_to_unmask(&mut sides, 8);
    let fp = *encoding(4).fixed_point();
    let err = sides[1].seal(vec![0; 8], &fp, key(), Round(0)).unwrap_err();
    assert!(matches!(err, RobustError::AlreadySealed { .. }), "{err}");
    let err = sides[1].advertise(Round(0));
    assert!(err.is_ok(), "the same advert again while the round is held");
    sides[1].forget_through(Round(0));
    assert!(sides[1].held_rounds().is_empty());
    let err = sides[1].advertise(Round(0)).unwrap_err();
    assert!(matches!(err, RobustError::AlreadySealed { .. }), "{err}");
    let err = sides[1]
        .unmask(&UnmaskRequest {
            round: Round(0),
            alive: PartySet::new((0..4).map(PartyId)),
        })
        .unwrap_err();
    assert!(matches!(err, RobustError::RoundForgotten { .. }), "{err}");
}

#[test]
fn fixed_point_decodes_the_count_canary_as_alive_parties() {
    // A guard on the test helper: the canary slots hold |A_r| after the correction.
    let (roster, mut sides) = federation(10, 3, 3);
    let enc = encoding(10);
    let fp: FixedPoint = *enc.fixed_point();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut drops = [Drop::Never; 10];
    drops[6] = Drop::BeforeSubmitting;
    let out = run_round(&mut sides, &roster, Round(0), &drops, &enc, &mut rng, 64);
    let sum = out.sum.expect("exact");
    let count = fp.from_plaintext(sum[64 + 1]);
    assert_eq!(count, 9);
}

#[test]
fn the_coordinator_refuses_what_does_not_fit_the_round() {
    let (roster, mut sides) = federation(10, 3, 3);
    let salt = sides[0].salt();
    let mut coordinator = Coordinator::new(Arc::clone(&roster), salt).unwrap();
    let round = Round(5);
    // Too few adverts to close.
    for side in sides.iter_mut().take(6) {
        coordinator
            .add_advert(side.advertise(round).unwrap())
            .unwrap();
    }
    let err = coordinator.close_adverts(round).unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::BelowMinParties {
                found: 6,
                min: 7,
                ..
            }
        ),
        "{err}"
    );
    // Shares before the adverts closed.
    let err = coordinator
        .add_shares(round, PartyId(0), vec![])
        .unwrap_err();
    assert!(matches!(err, RobustError::NotReady { .. }), "{err}");
    for side in sides.iter_mut().skip(6).take(3) {
        coordinator
            .add_advert(side.advertise(round).unwrap())
            .unwrap();
    }
    // The same advert again is fine; another advert of the same party is refused.
    coordinator
        .add_advert(sides[0].advertise(round).unwrap())
        .unwrap();
    let mut other = sides[0].advertise(round).unwrap();
    other.blind[0] ^= 1;
    let err = coordinator.add_advert(other).unwrap_err();
    assert!(matches!(err, RobustError::BadSignature { .. }), "{err}");
    // A second, validly signed advert of party 0 (another process with its identity): its
    // round keys are drawn once, so it is refused.
    let twin = identities(10).swap_remove(0);
    let mut twin = RobustParty::new(twin, PartyId(0), Arc::clone(&roster), RUN).unwrap();
    let err = coordinator
        .add_advert(twin.advertise(round).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::DuplicateParty {
                party: PartyId(0),
                ..
            }
        ),
        "{err}"
    );
    let closed = coordinator.close_adverts(round).unwrap();
    let adverts = all_adverts(&coordinator, round, &closed);
    assert_eq!(adverts.len(), 9);
    // Each party is handed its k = 8 neighbours' adverts; one missing is refused, and the
    // refusal changes nothing.
    let theirs = coordinator.adverts_for(round, PartyId(1)).unwrap();
    assert_eq!(theirs.len(), 8);
    let err = sides[1]
        .share_keys(round, &closed, &theirs[1..])
        .unwrap_err();
    assert!(matches!(err, RobustError::MissingAdvert { .. }), "{err}");
    // A late advert (party 9) is refused: it joins a later round.
    let err = coordinator
        .add_advert(sides[9].advertise(round).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::OutOfOrder {
                party: PartyId(9),
                ..
            }
        ),
        "{err}"
    );
    // Shares to the wrong receivers, or on behalf of another party, are refused.
    let sent = sides[0]
        .share_keys(round, &advertisers(&adverts), &adverts)
        .unwrap();
    let err = coordinator
        .add_shares(round, PartyId(0), sent[1..].to_vec())
        .unwrap_err();
    assert!(matches!(err, RobustError::BadResponse { .. }), "{err}");
    let err = coordinator
        .add_shares(round, PartyId(1), sent.clone())
        .unwrap_err();
    assert!(matches!(err, RobustError::BadResponse { .. }), "{err}");
    coordinator
        .add_shares(round, PartyId(0), sent.clone())
        .unwrap();
    coordinator.add_shares(round, PartyId(0), sent).unwrap();
    // The mailbox opens only once the shares closed, and then only with enough sharers.
    let err = coordinator.mailbox(round, PartyId(1)).unwrap_err();
    assert!(matches!(err, RobustError::OutOfOrder { .. }), "{err}");
    let err = coordinator.close_shares(round).unwrap_err();
    assert!(
        matches!(err, RobustError::BelowMinParties { found: 1, .. }),
        "{err}"
    );
    for (i, side) in sides.iter_mut().enumerate().skip(1).take(8) {
        let sent = side
            .share_keys(round, &advertisers(&adverts), &adverts)
            .unwrap();
        coordinator
            .add_shares(round, PartyId(i as u32), sent)
            .unwrap();
    }
    let set = coordinator.close_shares(round).unwrap();
    assert_eq!(set.len(), 9);
    // Every member's mailbox holds one message from each of its neighbours in the set.
    let graph = hefl::secagg::MaskGraph::harary(&set, 8, &salt, round).unwrap();
    for p in set.iter() {
        let mail = coordinator.mailbox(round, p).unwrap();
        assert_eq!(mail.len(), graph.neighbours(p).len());
    }
    // An unmask over a party outside the set is refused; forgetting drops the round.
    let err = coordinator
        .start_unmask(round, PartySet::new((0..10).map(PartyId)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::UnknownParty {
                party: PartyId(9),
                ..
            }
        ),
        "{err}"
    );
    coordinator.forget_through(round);
    assert!(coordinator.set(round).is_none());
}

/// Every party and the coordinator restarted from their checkpoints (through bincode, as a
/// checkpoint file holds them).
fn restart_all(sides: &mut [RobustParty], roster: &Arc<Roster>, coordinator: &mut Coordinator) {
    let ids = identities(sides.len() as u32);
    for (i, side) in sides.iter_mut().enumerate() {
        let bytes = bincode::serialize(&side.checkpoint()).expect("serialize");
        let checkpoint: hefl::secagg::RobustCheckpoint =
            bincode::deserialize(&bytes).expect("deserialize");
        let mut fresh = RobustParty::new(
            Arc::clone(&ids[i]),
            PartyId(i as u32),
            Arc::clone(roster),
            RUN,
        )
        .expect("party");
        fresh.restore(&checkpoint).expect("restore");
        *side = fresh;
    }
    let bytes = bincode::serialize(&coordinator.checkpoint()).expect("serialize");
    let checkpoint: hefl::secagg::CoordinatorCheckpoint =
        bincode::deserialize(&bytes).expect("deserialize");
    *coordinator = Coordinator::restore(Arc::clone(roster), sides[0].salt(), &checkpoint)
        .expect("restore coordinator");
}

#[test]
fn parties_and_the_coordinator_restarted_at_every_phase_finish_the_round_exactly() {
    let (roster, mut sides) = federation(10, 3, 3);
    let enc = encoding(10);
    let fp = *enc.fixed_point();
    let (len, round) = (300, Round(4));
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut coordinator = Coordinator::new(Arc::clone(&roster), sides[0].salt()).unwrap();
    for side in sides.iter_mut() {
        coordinator
            .add_advert(side.advertise(round).unwrap())
            .unwrap();
    }
    restart_all(&mut sides, &roster, &mut coordinator);
    let closed = coordinator.close_adverts(round).unwrap();
    let adverts = all_adverts(&coordinator, round, &closed);
    // Party 6 shares, then restarts: it resends the same messages.
    let before = sides[6]
        .share_keys(round, &advertisers(&adverts), &adverts)
        .unwrap();
    for (i, side) in sides.iter_mut().enumerate() {
        let sent = side
            .share_keys(round, &advertisers(&adverts), &adverts)
            .unwrap();
        coordinator
            .add_shares(round, PartyId(i as u32), sent)
            .unwrap();
    }
    restart_all(&mut sides, &roster, &mut coordinator);
    assert_eq!(
        sides[6]
            .share_keys(round, &advertisers(&adverts), &adverts)
            .unwrap(),
        before
    );
    let set = coordinator.close_shares(round).unwrap();
    for p in set.iter() {
        let mail = coordinator.mailbox(round, p).unwrap();
        sides[p.0 as usize]
            .receive_shares(round, &set, &mail)
            .unwrap();
    }
    restart_all(&mut sides, &roster, &mut coordinator);
    let widths = Widths::new(fp.params().total_bits, 10, DownloadForm::Seeds).unwrap();
    let mut expected = vec![0u64; len + 1];
    let mut sum: Option<CompactVector> = None;
    for (i, side) in sides.iter_mut().enumerate() {
        let values: Vec<f32> = (0..len).map(|_| rng.random_range(-3.0f32..3.0)).collect();
        let words = enc.encode(&values, 64, &mut rng).unwrap().words;
        let sealed = side.seal(words.clone(), &fp, key(), round).unwrap();
        if i == 8 {
            continue; // dead: its upload never arrives
        }
        expected
            .iter_mut()
            .zip(&words)
            .for_each(|(e, w)| *e = e.wrapping_add(*w));
        let ct = key()
            .prepare(sealed.len())
            .unwrap()
            .seal(&sealed, &widths)
            .unwrap();
        match sum.as_mut() {
            None => sum = Some(ct),
            Some(s) => s.add_assign(&ct).unwrap(),
        }
    }
    restart_all(&mut sides, &roster, &mut coordinator);
    // A restarted party never seals the round again.
    let err = sides[3]
        .seal(vec![0; len + 1], &fp, key(), round)
        .unwrap_err();
    assert!(matches!(err, RobustError::AlreadySealed { .. }), "{err}");
    let alive = PartySet::new((0..10).filter(|&i| i != 8).map(PartyId));
    let request = coordinator.start_unmask(round, alive.clone()).unwrap();
    let first = sides[1].unmask(&request).unwrap();
    for p in alive.iter().take(5) {
        let answer = sides[p.0 as usize].unmask(&request).unwrap();
        coordinator.add_response(round, p, answer).unwrap();
    }
    restart_all(&mut sides, &roster, &mut coordinator);
    // The answer survives the restart byte for byte, and so does the never-both record.
    assert_eq!(
        sides[1].unmask(&request).unwrap().to_bytes(),
        first.to_bytes()
    );
    let err = sides[1]
        .unmask(&UnmaskRequest {
            round,
            alive: PartySet::new((0..10).map(PartyId)),
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            RobustError::ConflictingReveal { .. } | RobustError::AlreadyAnswered { .. }
        ),
        "{err}"
    );
    for p in alive.iter().skip(5) {
        let answer = sides[p.0 as usize].unmask(&request).unwrap();
        coordinator.add_response(round, p, answer).unwrap();
    }
    let correction = coordinator
        .correction(round, len + 3, fp.params().total_bits)
        .unwrap();
    let mut sum = sum.unwrap();
    sum.add_public(&correction).unwrap();
    let plain = key().decrypt(&sum.expand()).unwrap();
    let opened = sides[0].open(&plain, &fp, key(), round, &alive).unwrap();
    assert_eq!(fp.decode_integers(opened), fp.decode_integers(&expected));

    // A checkpoint of another party, or with a secret that is not the advertised one, is
    // refused.
    let ids = identities(10);
    let mut other =
        RobustParty::new(Arc::clone(&ids[2]), PartyId(2), Arc::clone(&roster), RUN).unwrap();
    let err = other.restore(&sides[3].checkpoint()).unwrap_err();
    assert!(matches!(err, RobustError::Malformed { .. }), "{err}");
    let mut bytes = bincode::serialize(&sides[2].checkpoint()).unwrap();
    // The first round record's channel secret starts after party (4), salt (32), the
    // last sealed option (1 + 8), the rounds' length (8) and the round (8); its second byte
    // (X25519 clamps bits of the first and last).
    bytes[4 + 32 + 9 + 8 + 8 + 1] ^= 1;
    let tampered: hefl::secagg::RobustCheckpoint = bincode::deserialize(&bytes).unwrap();
    let err = other.restore(&tampered).unwrap_err();
    assert!(matches!(err, RobustError::Malformed { .. }), "{err}");
    other
        .restore(&sides[2].checkpoint())
        .expect("its own checkpoint");
    // Forgetting the round wipes its secrets from the checkpoint too.
    sides[2].forget_through(round);
    let bytes = bincode::serialize(&sides[2].checkpoint()).unwrap();
    assert!(
        bytes.len() < 64,
        "{} bytes left after forgetting",
        bytes.len()
    );
}

#[test]
fn a_roster_asking_for_the_consistency_round_is_refused_until_it_is_built() {
    let ids = identities(10);
    let (robust, min_parties) = RobustPolicy::rule_a(10, 3, 3, None, None, true).unwrap();
    let policy = Policy {
        mode: Mode::Robust(robust),
        parties: 10,
        min_parties,
    };
    let roster = Arc::new(
        Roster::new_signed(
            key().key_id(),
            ids.iter().map(|id| id.public()).collect(),
            ids.iter().map(|id| id.signing_public()).collect(),
            policy,
        )
        .unwrap(),
    );
    let err =
        RobustParty::new(Arc::clone(&ids[0]), PartyId(0), Arc::clone(&roster), RUN).unwrap_err();
    assert!(
        matches!(err, RobustError::ConsistencyCheckUnsupported),
        "{err}"
    );
    let err = Coordinator::new(roster, [0; 32]).unwrap_err();
    assert!(
        matches!(err, RobustError::ConsistencyCheckUnsupported),
        "{err}"
    );
}

/// Party `i` of a 4-party `he` federation of 6 values (at least 3 in a sum), without
/// secure aggregation.
fn he_party(i: u32) -> hefl::fl::Party {
    use hefl::fl::{Federation, Party, Privacy, Step};
    let federation = Federation {
        party: PartyId(i),
        parties: 4,
        id_limit: 4,
        min_parties: 3,
        length: 6,
        encoding: Encoding::new(8.0, 16, 4, Weighting::Fraction { nominal: 1 }).unwrap(),
        privacy: Privacy::He,
        he: Some((key().key_id(), DownloadForm::Seeds)),
        step: Step::Delta,
        snapshot_every: None,
        run: RUN,
    };
    let key = Arc::new(KeyFile::from_seed([12; 32]).secret_key().unwrap());
    let rounding = ChaCha8Rng::seed_from_u64(u64::from(i));
    let rounding = rand_chacha::ChaCha20Rng::from_seed(rounding.get_seed());
    Party::new(federation, vec![0.0; 6], Some(key), rounding).unwrap()
}

/// The server's sum of `uploads` for `round`, stamped, with `correction` added (robust).
fn server_sum(
    party: &hefl::fl::Party,
    uploads: &[Vec<u8>],
    round: Round,
    correction: Option<&[u64]>,
) -> Vec<u8> {
    use hefl::fl::Summable;
    let expect = party.envelope().expected_he().unwrap();
    let mut sum = CompactVector::parse_submission(&uploads[0], &expect).unwrap();
    for upload in &uploads[1..] {
        sum.add_submission(upload, &expect).unwrap();
    }
    if let Some(correction) = correction {
        Summable::add_public(&mut sum, correction).unwrap();
    }
    sum.set_context(hefl::he::Context::sum(RUN, round.0));
    sum.to_bytes()
}

#[test]
fn robust_parties_end_with_the_models_of_he_parties_bit_for_bit() {
    use hefl::fl::{EnvelopeCost, Published, Received};
    let (roster, sides) = federation(4, 1, 1);
    let salt = sides[0].salt();
    let mut robust: Vec<hefl::fl::Party> = sides
        .into_iter()
        .enumerate()
        .map(|(i, side)| he_party(i as u32).with_robust(side).unwrap())
        .collect();
    let mut plain: Vec<hefl::fl::Party> = (0..4).map(he_party).collect();
    let mut coordinator = Coordinator::new(Arc::clone(&roster), salt).unwrap();
    let all: Vec<PartyId> = (0..4).map(PartyId).collect();
    let mut cost = EnvelopeCost::default();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for r in 0..3u64 {
        let round = Round(r);
        let updates: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..6).map(|_| rng.random_range(-2.0f32..2.0)).collect())
            .collect();
        // The round's keys and shares, through each party's envelope.
        for party in &robust {
            let advert = party
                .envelope()
                .robust(|p| p.advertise(round))
                .unwrap()
                .unwrap();
            coordinator.add_advert(advert).unwrap();
        }
        let closed = coordinator.close_adverts(round).unwrap();
        let adverts = all_adverts(&coordinator, round, &closed);
        for party in &robust {
            let sent = party
                .envelope()
                .robust(|p| p.share_keys(round, &advertisers(&adverts), &adverts))
                .unwrap()
                .unwrap();
            coordinator.add_shares(round, party.id(), sent).unwrap();
        }
        let set = coordinator.close_shares(round).unwrap();
        for party in &robust {
            let mail = coordinator.mailbox(round, party.id()).unwrap();
            party
                .envelope()
                .robust(|p| p.receive_shares(round, &set, &mail))
                .unwrap()
                .unwrap();
        }
        let seal = |parties: &mut [hefl::fl::Party], cost: &mut EnvelopeCost| -> Vec<Vec<u8>> {
            parties
                .iter_mut()
                .zip(&updates)
                .map(|(p, u)| p.seal(round, u, 1, None, cost).unwrap().bytes)
                .collect()
        };
        let robust_uploads = seal(&mut robust, &mut cost);
        let plain_uploads = seal(&mut plain, &mut cost);
        let request = coordinator.start_unmask(round, set.clone()).unwrap();
        for party in &robust {
            let answer = party
                .envelope()
                .robust(|p| p.unmask(&request))
                .unwrap()
                .unwrap();
            coordinator.add_response(round, party.id(), answer).unwrap();
        }
        let len = robust[0].envelope().wire_len();
        let t = robust[0].envelope().encoding().total_bits();
        let correction = coordinator.correction(round, len, t).unwrap();
        let published = |bytes: Vec<u8>, next_set: Option<Vec<PartyId>>| Published {
            round,
            parties: all.clone(),
            bytes: Arc::new(bytes),
            void: false,
            next_set,
        };
        // Negative control: the sum without the correction (the blinds still on it) is
        // refused by the canaries.
        let uncorrected = server_sum(&robust[0], &robust_uploads, round, None);
        let err = robust[1]
            .envelope()
            .open(
                &uncorrected,
                &all,
                hefl::he::Context::sum(RUN, r),
                &mut cost,
            )
            .unwrap_err();
        assert!(matches!(err, hefl::fl::EnvelopeError::Decode(_)), "{err}");
        let robust_sum = published(
            server_sum(&robust[0], &robust_uploads, round, Some(&correction)),
            Some(all.clone()),
        );
        let plain_sum = published(server_sum(&plain[0], &plain_uploads, round, None), None);
        for party in &mut robust {
            let received = party.receive(&robust_sum, &mut cost).unwrap();
            assert!(matches!(received, Received::Applied { .. }), "{received:?}");
            assert!(
                party
                    .envelope()
                    .robust(|p| p.held_rounds())
                    .unwrap()
                    .is_empty()
            );
        }
        for party in &mut plain {
            party.receive(&plain_sum, &mut cost).unwrap();
        }
        coordinator.forget_through(round);
    }
    for (r, p) in robust.iter().zip(&plain) {
        let bits = |m: &[f32]| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(r.model()), bits(p.model()), "{}", r.id());
    }
    assert_ne!(robust[0].model(), &[0.0; 6][..]);
}

#[test]
fn a_robust_partys_checkpoint_carries_its_round_secrets() {
    let (roster, sides) = federation(4, 1, 1);
    let salt = sides[0].salt();
    let mut parties: Vec<hefl::fl::Party> = sides
        .into_iter()
        .enumerate()
        .map(|(i, side)| he_party(i as u32).with_robust(side).unwrap())
        .collect();
    let mut coordinator = Coordinator::new(Arc::clone(&roster), salt).unwrap();
    let round = Round(0);
    for party in &parties {
        let advert = party
            .envelope()
            .robust(|p| p.advertise(round))
            .unwrap()
            .unwrap();
        coordinator.add_advert(advert).unwrap();
    }
    let closed = coordinator.close_adverts(round).unwrap();
    let adverts = all_adverts(&coordinator, round, &closed);
    for party in &parties {
        let sent = party
            .envelope()
            .robust(|p| p.share_keys(round, &advertisers(&adverts), &adverts))
            .unwrap()
            .unwrap();
        coordinator.add_shares(round, party.id(), sent).unwrap();
    }
    let set = coordinator.close_shares(round).unwrap();
    for party in &parties {
        let mail = coordinator.mailbox(round, party.id()).unwrap();
        party
            .envelope()
            .robust(|p| p.receive_shares(round, &set, &mail))
            .unwrap()
            .unwrap();
    }
    let mut cost = hefl::fl::EnvelopeCost::default();
    let sealed = parties[2]
        .seal(round, &[0.5; 6], 1, None, &mut cost)
        .unwrap();
    // Party 2 restarts from its checkpoint: it resends the same bytes, and still holds the
    // shares it must reveal at the unmask step.
    let bytes = parties[2].state().to_bytes();
    let state = hefl::fl::PartyState::from_bytes(&bytes, 1 << 20).unwrap();
    let ids = identities(4);
    let fresh =
        RobustParty::new(Arc::clone(&ids[2]), PartyId(2), Arc::clone(&roster), RUN).unwrap();
    let mut restarted = he_party(2).with_robust(fresh).unwrap();
    restarted.restore(state.clone()).unwrap();
    assert_eq!(restarted.sealed_upload(round), Some(&sealed.bytes[..]));
    let request = coordinator.start_unmask(round, set.clone()).unwrap();
    let answer = restarted
        .envelope()
        .robust(|p| p.unmask(&request))
        .unwrap()
        .unwrap();
    assert_eq!(answer.shares.len(), 3);
    // A party without robust secure aggregation refuses that state.
    let err = he_party(2).restore(state).unwrap_err();
    assert!(matches!(err, hefl::fl::StateError::Robust(_)), "{err}");
}
