//! The workloads `bench-report` measures (`hefl::perf::workloads`) do what they claim: the
//! robust rounds' bytes are the messages' sizes, and the server's correction makes the sum
//! exact. Nothing here is timed.

use hefl::perf::workloads::{RobustFederation, dropouts_at, robust_tolerance};
use hefl::secagg::{ADVERT_BYTES, SEALED_SHARES_BYTES};

/// An unmask response's bytes: round, sender and count, then per neighbour its id, the kind
/// byte and a share (x and the secret's bytes: 16 for a seed, 32 for a blind secret).
fn response_bytes(alive_neighbours: usize, dead_neighbours: usize) -> usize {
    16 + alive_neighbours * (4 + 1 + 17) + dead_neighbours * (4 + 1 + 33)
}

#[test]
fn a_robust_round_counts_its_messages_and_its_correction_makes_the_sum_exact() {
    let (parties, len) = (10u32, 300);
    let mut federation = RobustFederation::new(parties, len).expect("federation");
    let policy = federation.policy();
    // Rule (a) with c = d = ⌈P/10⌉ = 1: k = 4, T = 2.
    assert_eq!(robust_tolerance(parties), 1);
    assert_eq!((policy.neighbours, policy.threshold), (4, 2));
    let k = policy.neighbours as usize;
    let others = parties as usize - 1;
    for dropouts in [0, dropouts_at(parties, 10)] {
        let (cost, round) = federation.round(dropouts, true).expect("round");
        assert!(cost.keys_and_shares > std::time::Duration::ZERO);
        assert_eq!(round.dropouts(), dropouts);
        // Up: the advert, k share messages, a response with (at most, for the party beside
        // the dropout) one share of a blind secret. Down: the advertisers' ids (a count and
        // 4 bytes each), its k neighbours' adverts, k share messages, and a request naming
        // the alive parties.
        let dead = dropouts as usize;
        let up = ADVERT_BYTES + k * SEALED_SHARES_BYTES + response_bytes(k - dead, dead);
        let down = 4
            + 4 * (others + 1)
            + k * ADVERT_BYTES
            + k * SEALED_SHARES_BYTES
            + 12
            + 4 * (others + 1 - dead);
        assert_eq!(
            (round.bytes.up, round.bytes.down),
            (up, down),
            "{dropouts} dropouts"
        );
        let (correction, _) = federation.unmask(&round).expect("unmask");
        assert_eq!(correction.len(), len + hefl::secagg::CANARY_SLOTS);
        let applied = federation
            .apply_correction(&round, &correction)
            .expect("the corrected sum is exact");
        assert!(applied.checked);
        assert!(applied.upload_bytes > len, "{} bytes", applied.upload_bytes);
        // Negative control: without the correction the parties refuse the sum.
        let zero = vec![0; correction.len()];
        assert!(federation.apply_correction(&round, &zero).is_err());
    }
    // Unchecked rounds (large P) still time the client and give a correction.
    let (_, round) = federation.round(0, false).expect("round");
    let (correction, _) = federation.unmask(&round).expect("unmask");
    let applied = federation
        .apply_correction(&round, &correction)
        .expect("applied");
    assert!(!applied.checked);
}
