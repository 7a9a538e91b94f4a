//! Optimizers that step a flat parameter vector with a flat gradient.

use super::LrSchedule;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which optimizer, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent.
    Sgd,
    /// SGD with heavy-ball momentum 0.9.
    Momentum,
    /// Adam (Kingma & Ba) with beta1 = 0.9, beta2 = 0.999, eps = 1e-8.
    Adam,
}

impl FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "momentum" => Ok(Self::Momentum),
            "adam" => Ok(Self::Adam),
            other => Err(format!(
                "unknown optimizer {other:?}: expected sgd, momentum or adam"
            )),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Sgd => "sgd",
            Self::Momentum => "momentum",
            Self::Adam => "adam",
        })
    }
}

const MOMENTUM: f32 = 0.9;
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

/// An optimizer's state: what [`Optimizer::state`] saves and [`Optimizer::restore`] loads.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimizerState {
    /// Momentum velocity, or Adam's first moment (empty for SGD).
    pub m: Vec<f32>,
    /// Adam's second moment (empty otherwise).
    pub v: Vec<f32>,
    /// Steps taken.
    pub steps: i32,
}

/// An optimizer state that does not fit the optimizer ([`Optimizer::restore`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "optimizer state of {} and {} moments at step {}, expected {} and {} for {kind}",
    .found.0, .found.1, .found.2, .expected.0, .expected.1
)]
pub struct OptimizerStateError {
    /// The optimizer.
    pub kind: OptimizerKind,
    /// The state's first and second moment lengths and step count.
    pub found: (usize, usize, i32),
    /// The optimizer's moment lengths.
    pub expected: (usize, usize),
}

/// An optimizer with its state for one parameter vector.
///
/// ```
/// use hefl::model::{Optimizer, OptimizerKind};
/// let mut params = vec![1.0f32, -1.0];
/// let mut sgd = Optimizer::new(OptimizerKind::Sgd, 0.5, 2);
/// sgd.step(&mut params, &[1.0, 1.0]);
/// assert_eq!(params, vec![0.5, -1.5]);
/// ```
#[derive(Clone, Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f32,
    /// Momentum velocity, or Adam's first moment.
    m: Vec<f32>,
    /// Adam's second moment.
    v: Vec<f32>,
    steps: i32,
    /// The learning rate's schedule over `total_steps` steps.
    schedule: LrSchedule,
    total_steps: u64,
}

impl Optimizer {
    /// A fresh optimizer for `len` parameters with learning rate `lr`.
    pub fn new(kind: OptimizerKind, lr: f32, len: usize) -> Self {
        let state = |used: bool| if used { vec![0.0; len] } else { Vec::new() };
        Self {
            kind,
            lr,
            m: state(kind != OptimizerKind::Sgd),
            v: state(kind == OptimizerKind::Adam),
            steps: 0,
            schedule: LrSchedule::Constant,
            total_steps: 0,
        }
    }

    /// This optimizer with its learning rate following `schedule` over a run of
    /// `total_steps` steps (the step count survives [`Optimizer::state`] and
    /// [`Optimizer::restore`], so a resumed run picks the schedule up where it was).
    ///
    /// ```
    /// use hefl::model::{LrSchedule, Optimizer, OptimizerKind};
    ///
    /// let mut p = vec![0.0f32];
    /// let mut sgd = Optimizer::new(OptimizerKind::Sgd, 1.0, 1).with_schedule(LrSchedule::Step, 4);
    /// for _ in 0..4 {
    ///     sgd.step(&mut p, &[1.0]);
    /// }
    /// // 1 + 1 + 0.1 + 0.01
    /// assert!((p[0] + 2.11).abs() < 1e-6, "{p:?}");
    /// assert_eq!(sgd.lr(), 0.01);
    /// ```
    pub fn with_schedule(mut self, schedule: LrSchedule, total_steps: u64) -> Self {
        self.schedule = schedule;
        self.total_steps = total_steps;
        self
    }

    /// The learning rate of the step taken last (the base rate before any step).
    pub fn lr(&self) -> f32 {
        self.lr_at(u64::try_from(self.steps.max(1) - 1).unwrap_or(0))
    }

    /// The learning rate of 0-based step `step`.
    fn lr_at(&self, step: u64) -> f32 {
        match self.schedule {
            LrSchedule::Constant => self.lr,
            schedule => (f64::from(self.lr) * schedule.factor(step, self.total_steps)) as f32,
        }
    }

    /// Which optimizer this is.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// The state a checkpoint needs: moments and step count.
    pub fn state(&self) -> OptimizerState {
        OptimizerState {
            m: self.m.clone(),
            v: self.v.clone(),
            steps: self.steps,
        }
    }

    /// Restores a [`Optimizer::state`]; refuses one whose moment lengths do not fit this
    /// optimizer (a checkpoint of another model or optimizer), naming the lengths.
    pub fn restore(&mut self, state: OptimizerState) -> Result<(), OptimizerStateError> {
        if state.m.len() != self.m.len() || state.v.len() != self.v.len() || state.steps < 0 {
            return Err(OptimizerStateError {
                kind: self.kind,
                found: (state.m.len(), state.v.len(), state.steps),
                expected: (self.m.len(), self.v.len()),
            });
        }
        self.m = state.m;
        self.v = state.v;
        self.steps = state.steps;
        Ok(())
    }

    /// One descent step: `params -= update(grad)`.
    ///
    /// Panics if the lengths differ from the one given to [`Optimizer::new`].
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) {
        assert_eq!(params.len(), grad.len(), "params and gradient lengths");
        let lr = self.lr_at(u64::try_from(self.steps).unwrap_or(0));
        self.steps = self.steps.saturating_add(1);
        match self.kind {
            OptimizerKind::Sgd => {
                for (p, g) in params.iter_mut().zip(grad) {
                    *p -= lr * g;
                }
            }
            OptimizerKind::Momentum => {
                assert_eq!(self.m.len(), params.len(), "optimizer state length");
                for ((p, g), m) in params.iter_mut().zip(grad).zip(&mut self.m) {
                    *m = MOMENTUM * *m + g;
                    *p -= lr * *m;
                }
            }
            OptimizerKind::Adam => {
                assert_eq!(self.m.len(), params.len(), "optimizer state length");
                let c1 = 1.0 - BETA1.powi(self.steps);
                let c2 = 1.0 - BETA2.powi(self.steps);
                let step = lr * c2.sqrt() / c1;
                let eps = EPS * c2.sqrt();
                for (((p, g), m), v) in params
                    .iter_mut()
                    .zip(grad)
                    .zip(&mut self.m)
                    .zip(&mut self.v)
                {
                    *m = BETA1 * *m + (1.0 - BETA1) * g;
                    *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                    *p -= step * *m / (v.sqrt() + eps);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_step_moves_by_lr_in_sign_direction() {
        let mut p = vec![0.0f32, 0.0, 0.0];
        let mut adam = Optimizer::new(OptimizerKind::Adam, 0.1, 3);
        adam.step(&mut p, &[3.0, -0.002, 0.0]);
        assert!((p[0] + 0.1).abs() < 1e-5, "{p:?}");
        assert!((p[1] - 0.1).abs() < 1e-4, "{p:?}");
        assert_eq!(p[2], 0.0);
    }

    #[test]
    fn momentum_accumulates() {
        let mut p = vec![0.0f32];
        let mut opt = Optimizer::new(OptimizerKind::Momentum, 1.0, 1);
        opt.step(&mut p, &[1.0]);
        opt.step(&mut p, &[1.0]);
        assert!((p[0] + 2.9).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn parses_names() {
        assert_eq!("Adam".parse::<OptimizerKind>(), Ok(OptimizerKind::Adam));
        assert!(
            "rmsprop"
                .parse::<OptimizerKind>()
                .unwrap_err()
                .contains("expected sgd")
        );
    }
}
