//! Learning-rate schedules: the learning rate of each optimizer step.

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// How the learning rate changes over a run of `total` optimizer steps: a factor of the
/// base rate for every step.
///
/// DP-SGD's noise does not shrink as training converges, so a constant rate leaves the
/// model wandering in a ball whose radius grows with the rate; decaying it lets the last
/// steps average the noise out. Abadi et al. (2016) decayed linearly; cosine decay
/// (Loshchilov and Hutter, ICLR 2017) is what recent DP-SGD work uses (De, Berrada, Hayes,
/// Smith and Balle, "Unlocking High-Accuracy Differentially Private Image Classification
/// through Scale", 2022).
///
/// ```
/// use hefl::model::LrSchedule;
///
/// assert_eq!(LrSchedule::Constant.factor(50, 100), 1.0);
/// assert_eq!(LrSchedule::Cosine.factor(0, 100), 1.0);
/// assert!((LrSchedule::Cosine.factor(50, 100) - 0.5).abs() < 1e-12);
/// assert_eq!(LrSchedule::Step.factor(49, 100), 1.0);
/// assert_eq!(LrSchedule::Step.factor(50, 100), 0.1);
/// assert!((LrSchedule::Step.factor(75, 100) - 0.01).abs() < 1e-12);
/// assert_eq!("cosine".parse::<LrSchedule>(), Ok(LrSchedule::Cosine));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The base rate at every step (what hefl always did).
    #[default]
    Constant,
    /// `(1 + cos(π·t/T)) / 2` times the base rate at step t of T: from the base rate down
    /// to zero.
    Cosine,
    /// The base rate for the first half of the steps, a tenth of it to three quarters, a
    /// hundredth after (the classic step decay).
    Step,
}

impl LrSchedule {
    /// Every schedule, in the order the help lists them.
    pub const ALL: [Self; 3] = [Self::Constant, Self::Cosine, Self::Step];

    /// The factor of the base rate at 0-based step `step` of `total` (steps past the end
    /// keep the last step's factor).
    pub fn factor(self, step: u64, total: u64) -> f64 {
        let total = total.max(1);
        let progress = step.min(total) as f64 / total as f64;
        match self {
            Self::Constant => 1.0,
            Self::Cosine => 0.5 * (1.0 + (PI * progress).cos()),
            Self::Step if progress < 0.5 => 1.0,
            Self::Step if progress < 0.75 => 0.1,
            Self::Step => 0.01,
        }
    }

    /// The name written on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Cosine => "cosine",
            Self::Step => "step",
        }
    }
}

impl FromStr for LrSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown learning-rate schedule {s:?}: expected constant, cosine or step")
            })
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}
