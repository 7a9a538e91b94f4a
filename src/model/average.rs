//! An exponential moving average of the parameters: post-processing of the training
//! trajectory, free in privacy.

use serde::{Deserialize, Serialize};

/// Keep an exponential moving average of the parameters over the optimizer steps and
/// report (evaluate, save) the average instead of the last iterate.
///
/// DP-SGD's last iterate carries the noise of its last steps; averaging the iterates
/// averages that noise out. Polyak averaging is the classic form; De, Berrada, Hayes,
/// Smith and Balle ("Unlocking High-Accuracy Differentially Private Image Classification
/// through Scale", 2022) use an EMA with warm-up, as here: at the t-th update (from 0) the
/// decay is `min(decay, (1 + t) / (10 + t))`, so the first updates follow the parameters
/// closely instead of remembering the random initialisation. The average is a function of
/// the released iterates only, so it costs no privacy.
///
/// ```
/// use hefl::model::Ema;
///
/// let mut avg = Ema { decay: 0.5 }.start(&[0.0]);
/// avg.update(&[1.0]); // warm-up decay min(0.5, 1/10) = 0.1
/// assert!((avg.average()[0] - 0.9).abs() < 1e-6);
/// avg.update(&[1.0]); // min(0.5, 2/11)
/// assert!(avg.average()[0] > 0.9);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ema {
    /// The largest decay (the weight of the old average), in [0, 1): 0.99 averages over
    /// about the last 100 steps, 0.999 over the last 1,000.
    pub decay: f32,
}

impl Ema {
    /// A running average that starts at `params`.
    pub fn start(self, params: &[f32]) -> EmaState {
        EmaState {
            decay: self.decay,
            average: params.to_vec(),
            updates: 0,
        }
    }
}

/// A running [`Ema`]: the average so far and the updates it has seen. Serializable, so a
/// checkpoint can carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmaState {
    decay: f32,
    average: Vec<f32>,
    updates: u64,
}

impl EmaState {
    /// Folds the parameters after one more step into the average.
    ///
    /// Panics if `params` does not have the average's length (both come from one model).
    pub fn update(&mut self, params: &[f32]) {
        assert_eq!(params.len(), self.average.len(), "parameter count");
        let t = self.updates as f32;
        let decay = self.decay.min((1.0 + t) / (10.0 + t));
        let weight = 1.0 - decay;
        for (a, p) in self.average.iter_mut().zip(params) {
            *a += weight * (p - *a);
        }
        self.updates = self.updates.saturating_add(1);
    }

    /// The average.
    pub fn average(&self) -> &[f32] {
        &self.average
    }

    /// Updates folded in so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }
}
