//! The policy a roster pins: the mode of secure aggregation (`strict`, or `robust` with its
//! parameters), the party count and the fewest parties in a sum. A server's plan may tighten
//! it, never weaken it ([`Roster::check_policy`](super::Roster::check_policy)).
//!
//! `robust`'s parameters follow rule (a) of the design note (`shared/design/masked-he.md`
//! §1.5), which holds whatever graph the server picks: against `c` colluders and `d`
//! dropouts per round, a threshold T = c + 1 (the colluders never hold T shares of a party's
//! secrets), k = c + d + 1 neighbours rounded up to even and capped at P - 1 (k - d >= T
//! holders stay alive, and the honest alive parties stay connected), and at least P - d
//! parties in a sum.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::roster::RosterError;

/// The most neighbours a robust party may have: GF(256) Shamir makes at most 255 shares.
const MAX_NEIGHBOURS: u32 = 255;

/// How secure aggregation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Pairwise blinds from the roster's static keys; a round with a member missing is void.
    Strict,
    /// Bonawitz et al.'s protocol on a neighbourhood graph (SecAgg+): signed per-round keys,
    /// blinds with a party's neighbours and a self-blind, Shamir shares of both, so that a
    /// round survives up to `dropouts` missing parties.
    Robust(RobustPolicy),
}

impl Mode {
    /// The mode's name, as `--secure-agg` takes it.
    pub fn name(&self) -> ModeName {
        match self {
            Self::Strict => ModeName::Strict,
            Self::Robust(_) => ModeName::Robust,
        }
    }
}

/// `strict`, or `robust (c colluders, d dropouts, k neighbours, threshold T[, consistency
/// check])`.
impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Strict => f.write_str("strict"),
            Self::Robust(robust) => write!(f, "robust ({robust})"),
        }
    }
}

/// Parses `strict`; `robust` needs its parameters, which a name does not carry (see
/// [`RobustPolicy::rule_a`]).
///
/// ```
/// use hefl::secagg::Mode;
///
/// assert_eq!("strict".parse::<Mode>(), Ok(Mode::Strict));
/// assert!("robust".parse::<Mode>().unwrap_err().contains("--max-colluders"));
/// ```
impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.parse::<ModeName>()? {
            ModeName::Strict => Ok(Self::Strict),
            ModeName::Robust => Err(
                "secure aggregation mode \"robust\" takes its parameters from the roster \
                 (`hefl roster --secure-agg robust --max-colluders C --max-dropouts D`)"
                    .to_owned(),
            ),
        }
    }
}

/// A mode's name, without its parameters: what a `--secure-agg` flag takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModeName {
    /// [`Mode::Strict`].
    Strict,
    /// [`Mode::Robust`].
    Robust,
}

impl fmt::Display for ModeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
            Self::Robust => "robust",
        })
    }
}

impl FromStr for ModeName {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "strict" => Ok(Self::Strict),
            "robust" => Ok(Self::Robust),
            other => Err(format!(
                "secure aggregation mode {other:?}: expected \"strict\" or \"robust\""
            )),
        }
    }
}

/// `robust`'s parameters, pinned in the roster.
///
/// ```
/// use hefl::secagg::RobustPolicy;
///
/// // 100 parties, up to 10 colluders and 10 dropouts per round.
/// let (robust, min_parties) = RobustPolicy::rule_a(100, 10, 10, None, None, false)?;
/// assert_eq!((robust.threshold, robust.neighbours, min_parties), (11, 22, 90));
/// assert_eq!(robust.to_string(), "10 colluders, 10 dropouts, 22 neighbours, threshold 11");
/// # Ok::<(), hefl::secagg::RosterError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustPolicy {
    /// c: the most clients colluding with the server that a round's privacy withstands.
    pub colluders: u32,
    /// d: the most parties a round may lose after it started and still publish a sum.
    pub dropouts: u32,
    /// k: each party's neighbours, who blind with it and hold shares of its secrets.
    pub neighbours: u32,
    /// T: the shares that reconstruct a party's secret (of its k).
    pub threshold: u32,
    /// Before unmasking, every alive party signs the round's alive set and refuses an unmask
    /// request without T of its neighbours' signatures on the same set (design §1.5, R2½).
    pub consistency_check: bool,
}

impl fmt::Display for RobustPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} colluders, {} dropouts, {} neighbours, threshold {}",
            self.colluders, self.dropouts, self.neighbours, self.threshold
        )?;
        if self.consistency_check {
            f.write_str(", consistency check")?;
        }
        Ok(())
    }
}

impl RobustPolicy {
    /// The parameters of rule (a) for `parties` parties against `colluders` colluders and
    /// `dropouts` dropouts per round, and the default `min_parties` (parties - dropouts):
    /// T = c + 1 and k = c + d + 1 rounded up to even, capped at P - 1, unless `neighbours`
    /// or `threshold` overrides them. Refused ([`RosterError::BadPolicy`], the reason naming
    /// the numbers) when the result cannot hold: see [`RobustPolicy::check`].
    ///
    /// ```
    /// use hefl::secagg::RobustPolicy;
    ///
    /// let (robust, min_parties) = RobustPolicy::rule_a(10, 3, 3, None, None, true)?;
    /// assert_eq!((robust.threshold, robust.neighbours, min_parties), (4, 8, 7));
    /// // Three parties cannot survive a dropout with a colluder among them.
    /// let err = RobustPolicy::rule_a(3, 1, 1, None, None, false).unwrap_err();
    /// assert!(err.to_string().contains("--secure-agg strict"), "{err}");
    /// // A threshold the colluders reach is refused.
    /// assert!(RobustPolicy::rule_a(10, 3, 3, None, Some(3), false).is_err());
    /// # Ok::<(), hefl::secagg::RosterError>(())
    /// ```
    pub fn rule_a(
        parties: u32,
        colluders: u32,
        dropouts: u32,
        neighbours: Option<u32>,
        threshold: Option<u32>,
        consistency_check: bool,
    ) -> Result<(RobustPolicy, u32), RosterError> {
        let robust = Self {
            colluders,
            dropouts,
            neighbours: neighbours
                .unwrap_or_else(|| Self::rule_a_neighbours(parties, colluders, dropouts)),
            threshold: threshold.unwrap_or(colluders.saturating_add(1)),
            consistency_check,
        };
        let min_parties = parties.saturating_sub(dropouts);
        robust.check(parties, min_parties)?;
        Ok((robust, min_parties))
    }

    /// Rule (a)'s neighbours for `parties` parties against `colluders` colluders and
    /// `dropouts` dropouts: c + d + 1 rounded up to even (a Harary graph of even degree),
    /// capped at P - 1 (everyone else).
    ///
    /// ```
    /// use hefl::secagg::RobustPolicy;
    ///
    /// assert_eq!(RobustPolicy::rule_a_neighbours(100, 10, 10), 22);
    /// assert_eq!(RobustPolicy::rule_a_neighbours(10, 3, 3), 8);
    /// assert_eq!(RobustPolicy::rule_a_neighbours(5, 3, 3), 4);
    /// ```
    pub fn rule_a_neighbours(parties: u32, colluders: u32, dropouts: u32) -> u32 {
        let wanted = u64::from(colluders) + u64::from(dropouts) + 1;
        let even = wanted + wanted % 2;
        let capped = even.min(u64::from(parties.saturating_sub(1)));
        // At most P - 1, a u32.
        u32::try_from(capped).unwrap_or(u32::MAX)
    }

    /// Refuses parameters that cannot hold for `parties` parties with at least `min_parties`
    /// in a sum: fewer than 1 or more than P - 1 neighbours, more than 255 (GF(256) Shamir's
    /// most shares), a threshold T <= c (the colluders could reconstruct), k - d < T (too
    /// few holders alive after d dropouts), `min_parties` below c + 2 (a sum must hold at
    /// least two honest parties) or above P.
    pub fn check(&self, parties: u32, min_parties: u32) -> Result<(), RosterError> {
        match self.refusal(parties, min_parties) {
            None => Ok(()),
            Some(reason) => Err(RosterError::BadPolicy {
                policy: Policy {
                    mode: Mode::Robust(*self),
                    parties,
                    min_parties,
                },
                reason,
            }),
        }
    }

    /// Why [`RobustPolicy::check`] refuses, if it does.
    fn refusal(&self, parties: u32, min_parties: u32) -> Option<String> {
        let Self {
            colluders: c,
            dropouts: d,
            neighbours: k,
            threshold: t,
            ..
        } = *self;
        let others = parties.saturating_sub(1);
        let honest_floor = u64::from(c) + 2;
        if k < 1 {
            return Some("neighbours k = 0: a party needs neighbours to hold its shares".into());
        }
        if k > others {
            return Some(format!(
                "neighbours k = {k}, but a party of {parties} has only {others} others"
            ));
        }
        if k > MAX_NEIGHBOURS {
            return Some(format!(
                "neighbours k = {k}: GF(256) Shamir holds at most {MAX_NEIGHBOURS} shares (one per \
                 neighbour); random-graph parameters for large federations are not built yet"
            ));
        }
        if t <= c {
            return Some(format!(
                "threshold T = {t} with c = {c} colluders: they could reconstruct a party's \
                 secrets together (T must be at least c + 1 = {})",
                u64::from(c) + 1
            ));
        }
        if k.saturating_sub(d) < t {
            let alive = k.saturating_sub(d);
            let advice = if u64::from(parties) < u64::from(c) + u64::from(d) + 2 {
                format!(
                    "{parties} parties cannot withstand {c} colluders and {d} dropouts at once \
                     (that takes at least c + d + 2 = {} parties): lower --max-dropouts or \
                     --max-colluders, or use `--secure-agg strict` (a round with a party \
                     missing is void)",
                    u64::from(c) + u64::from(d) + 2
                )
            } else {
                format!("k must be at least d + T = {}", u64::from(d) + u64::from(t))
            };
            return Some(format!(
                "with k = {k} neighbours and d = {d} dropouts only {alive} share holders may be \
                 alive, fewer than the threshold T = {t}: {advice}"
            ));
        }
        if u64::from(min_parties) < honest_floor {
            return Some(format!(
                "min_parties {min_parties} is below c + 2 = {honest_floor}: a sum must hold at \
                 least two honest parties besides the {c} colluders"
            ));
        }
        if min_parties > parties {
            return Some(format!(
                "min_parties {min_parties} is more than the {parties} parties"
            ));
        }
        None
    }

    /// Refuses `plan`'s parameters unless they are these: the same colluders, dropouts,
    /// neighbours and threshold, and the consistency check on if it is on here.
    pub(crate) fn check_plan(&self, plan: &RobustPolicy) -> Result<(), RosterError> {
        let same = [
            ("colluders", self.colluders, plan.colluders),
            ("dropouts", self.dropouts, plan.dropouts),
            ("neighbours", self.neighbours, plan.neighbours),
            ("threshold", self.threshold, plan.threshold),
        ];
        if let Some((rule, ours, theirs)) = same.into_iter().find(|(_, a, b)| a != b) {
            return Err(weakened(rule, ours, theirs));
        }
        if self.consistency_check && !plan.consistency_check {
            return Err(weakened("consistency_check", "on", "off"));
        }
        Ok(())
    }
}

/// A plan's `rule` is weaker than the roster's: the roster says `expected`, the plan `found`.
pub(crate) fn weakened(
    rule: &'static str,
    expected: impl fmt::Display,
    found: impl fmt::Display,
) -> RosterError {
    RosterError::PolicyWeakened {
        rule,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// What a federation's secure aggregation guarantees: pinned in the roster, so that the
/// server, which only relays, cannot weaken it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The mode.
    pub mode: Mode,
    /// Parties in the roster (ids 0 to parties - 1).
    pub parties: u32,
    /// The fewest parties a published sum may hold: the privacy floor against a server that
    /// drops parties from the set (`robust`: A_min).
    pub min_parties: u32,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode {}, {} parties, at least {} in a sum",
            self.mode, self.parties, self.min_parties
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule (a) with no overrides, min_parties P - d.
    fn rule_a(parties: u32, c: u32, d: u32) -> Result<(RobustPolicy, u32), RosterError> {
        RobustPolicy::rule_a(parties, c, d, None, None, false)
    }

    #[test]
    fn rule_a_at_three_parties_refuses_a_colluder_and_a_dropout_and_says_strict() {
        let err = rule_a(3, 1, 1).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RosterError::BadPolicy { .. }), "{text}");
        assert!(
            text.contains("only 1 share holders may be alive, fewer than the threshold T = 2")
                && text.contains("use `--secure-agg strict`"),
            "{text}"
        );
        // With no dropout, three parties withstand one colluder (k = 2 = T).
        let (robust, min_parties) = rule_a(3, 1, 0).unwrap();
        assert_eq!(
            (robust.neighbours, robust.threshold, min_parties),
            (2, 2, 3)
        );
    }

    #[test]
    fn rule_a_at_ten_and_a_hundred_parties() {
        let (robust, min_parties) = rule_a(10, 3, 3).unwrap();
        assert_eq!(
            (robust.threshold, robust.neighbours, min_parties),
            (4, 8, 7),
            "P = 10, c = d = 3: T = c + 1, k = c + d + 1 = 7 rounded up to 8"
        );
        let (robust, min_parties) = rule_a(100, 10, 10).unwrap();
        assert_eq!(
            (robust.threshold, robust.neighbours, min_parties),
            (11, 22, 90)
        );
        assert_eq!(
            Mode::Robust(robust).to_string(),
            "robust (10 colluders, 10 dropouts, 22 neighbours, threshold 11)"
        );
        let with_check = RobustPolicy {
            consistency_check: true,
            ..robust
        };
        assert_eq!(
            Mode::Robust(with_check).to_string(),
            "robust (10 colluders, 10 dropouts, 22 neighbours, threshold 11, consistency check)"
        );
    }

    #[test]
    fn rule_a_refuses_more_than_255_neighbours() {
        // c = d = 100 of 300 gives k = 202: within GF(256)'s 255 shares.
        let (robust, _) = rule_a(300, 100, 100).unwrap();
        assert_eq!((robust.neighbours, robust.threshold), (202, 101));
        // c = d = 130 of 300 would need k = 262.
        let text = rule_a(300, 130, 130).unwrap_err().to_string();
        assert!(
            text.contains("neighbours k = 262") && text.contains("at most 255 shares"),
            "{text}"
        );
        assert!(text.contains("random-graph parameters"), "{text}");
    }

    #[test]
    fn overrides_weaker_than_rule_a_are_refused() {
        // T = c: the colluders hold enough shares.
        let text = RobustPolicy::rule_a(100, 10, 10, None, Some(10), false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("threshold T = 10 with c = 10 colluders"),
            "{text}"
        );
        // k - d < T: too few holders survive the dropouts.
        let text = RobustPolicy::rule_a(100, 10, 10, Some(20), None, false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("only 10 share holders") && text.contains("at least d + T = 21"),
            "{text}"
        );
        // More neighbours than others, none at all.
        let text = RobustPolicy::rule_a(10, 1, 1, Some(10), None, false)
            .unwrap_err()
            .to_string();
        assert!(text.contains("has only 9 others"), "{text}");
        assert!(RobustPolicy::rule_a(10, 0, 0, Some(0), None, false).is_err());
        // Stronger overrides are accepted (an odd k too).
        let (robust, _) = RobustPolicy::rule_a(100, 10, 10, Some(31), Some(12), true).unwrap();
        assert_eq!((robust.neighbours, robust.threshold), (31, 12));
    }

    #[test]
    fn min_parties_must_keep_two_honest_parties_in_a_sum() {
        let (robust, _) = rule_a(10, 3, 3).unwrap();
        let text = robust.check(10, 4).unwrap_err().to_string();
        assert!(text.contains("min_parties 4 is below c + 2 = 5"), "{text}");
        robust.check(10, 5).unwrap();
        assert!(robust.check(10, 11).is_err());
    }

    #[test]
    fn mode_names_parse_and_strict_serializes_as_before() {
        assert_eq!("robust".parse::<ModeName>(), Ok(ModeName::Robust));
        assert!(
            "lenient"
                .parse::<ModeName>()
                .unwrap_err()
                .contains("\"robust\"")
        );
        assert_eq!(serde_json::to_string(&Mode::Strict).unwrap(), "\"strict\"");
        let (robust, _) = rule_a(10, 3, 3).unwrap();
        let text = serde_json::to_string(&Mode::Robust(robust)).unwrap();
        assert_eq!(
            serde_json::from_str::<Mode>(&text).unwrap(),
            Mode::Robust(robust)
        );
        assert_eq!(Mode::Robust(robust).name(), ModeName::Robust);
    }
}
