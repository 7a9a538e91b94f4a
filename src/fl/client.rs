//! A party: its own data, its own copy of the model, its own optimizer.

use super::seeds::RngState;
use super::server::PartyId;
use super::strategy::Strategy;
use crate::data::Dataset;
use crate::dp::{DpSgd, Sampling, add_gaussian_noise};
use crate::he::SecureRng;
use crate::model::{LrSchedule, Mlp, Optimizer, OptimizerKind};
use ndarray::Array2;
use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

/// What one client sends for one round, before any privacy mechanism.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// FedSGD: the mean gradient of one batch. FedAvg: the model delta
    /// (parameters after the local steps minus parameters before).
    pub values: Vec<f32>,
    /// How many samples the update was computed from (the FedAvg weight).
    pub samples: usize,
    /// Mean training loss over those samples, for progress reports.
    pub loss: f32,
}

/// One party's local training: its own data, its working copy of the model, its local
/// optimizer (FedAvg's local steps), its batch order and, in the DP variant, its DP-SGD state.
///
/// The global model (what every party holds identically) is not the client's: it lives in
/// the [`Party`](super::Party) state machine, or, for one trainer alone, in a
/// [`GlobalModel`](super::GlobalModel). A round loads it ([`Client::load`]) and computes an
/// update from it ([`Client::compute_update`]).
///
/// Not `Clone`: a DP client's secure generator must never be duplicated.
#[derive(Debug)]
pub struct Client {
    id: PartyId,
    data: Dataset,
    model: Mlp,
    optimizer: Optimizer,
    order: Vec<usize>,
    cursor: usize,
    rng: ChaCha20Rng,
    batch_x: Array2<f32>,
    batch_y: Vec<u8>,
    grad: Vec<f32>,
    round_start: Vec<f32>,
    dp: Option<DpState>,
}

/// A client's DP-SGD settings, its secure generator and its step count.
struct DpState {
    config: DpSgd,
    rng: SecureRng,
    steps: u64,
}

impl std::fmt::Debug for DpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpState")
            .field("config", &self.config)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with party index `id`, its local `data`, a copy of the common
    /// initial `model`, and a fresh optimizer. `seed` fixes its batch order.
    pub fn new(
        id: PartyId,
        data: Dataset,
        model: Mlp,
        optimizer: OptimizerKind,
        lr: f32,
        seed: u64,
    ) -> Self {
        let n = model.num_params();
        let mut client = Self {
            id,
            order: (0..data.len()).collect(),
            optimizer: Optimizer::new(optimizer, lr, n),
            model,
            cursor: 0,
            rng: ChaCha20Rng::seed_from_u64(
                seed ^ u64::from(id.0).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            batch_x: Array2::zeros((0, data.images.ncols())),
            batch_y: Vec::new(),
            grad: vec![0.0; n],
            round_start: Vec::new(),
            dp: None,
            data,
        };
        client.order.shuffle(&mut client.rng);
        client
    }

    /// The party index.
    pub fn id(&self) -> PartyId {
        self.id
    }

    /// Number of local training samples.
    pub fn num_samples(&self) -> usize {
        self.data.len()
    }

    /// Makes every local step a DP-SGD step with these settings, drawing noise and
    /// Poisson batches from `rng`.
    pub fn enable_dp(&mut self, config: DpSgd, rng: SecureRng) {
        self.dp = Some(DpState {
            config,
            rng,
            steps: 0,
        });
    }

    /// Makes the local optimizer's learning rate (FedAvg's local steps) follow `schedule`
    /// over `total_steps` local steps.
    pub fn set_lr_schedule(&mut self, schedule: LrSchedule, total_steps: u64) {
        self.optimizer = self.optimizer.clone().with_schedule(schedule, total_steps);
    }

    /// ε spent so far by this client's DP-SGD steps (`None` without DP), for a nominal
    /// batch size `batch_size` (sampling rate batch / local samples).
    pub fn epsilon(&self, batch_size: usize) -> Option<f64> {
        self.dp.as_ref().map(|dp| {
            let q = (batch_size as f64 / self.data.len().max(1) as f64).min(1.0);
            dp.config.epsilon(q, dp.steps)
        })
    }

    /// The client's working copy of the model: the global model after [`Client::load`].
    pub fn model(&self) -> &Mlp {
        &self.model
    }

    /// Sets the working copy to the global model's `params` (the start of every round).
    ///
    /// Panics if `params` does not have the model's length: the global model is built from
    /// the same plan as this client's.
    pub fn load(&mut self, params: &[f32]) {
        self.model.params_mut().copy_from_slice(params);
    }

    /// Fills the batch buffers with the next `batch_size` samples of this
    /// client's shuffled order, reshuffling after each pass over the data.
    fn next_batch(&mut self, batch_size: usize) {
        let take = batch_size.min(self.data.len());
        if self.cursor + take > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let rows = &self.order[self.cursor..self.cursor + take];
        self.cursor += take;
        if self.batch_x.nrows() != take {
            self.batch_x = Array2::zeros((take, self.data.images.ncols()));
        }
        for (mut dst, &i) in self.batch_x.rows_mut().into_iter().zip(rows) {
            dst.assign(&self.data.images.row(i));
        }
        self.batch_y.clear();
        self.batch_y
            .extend(rows.iter().map(|&i| self.data.labels[i]));
    }

    /// Fills the batch buffers with a Poisson sample: each example independently with
    /// probability `q`.
    fn poisson_batch(&mut self, q: f64) {
        let Some(dp) = self.dp.as_mut() else { return };
        let rows: Vec<usize> = (0..self.data.len())
            .filter(|_| dp.rng.random::<f64>() < q)
            .collect();
        self.batch_x = Array2::zeros((rows.len(), self.data.images.ncols()));
        for (mut dst, &i) in self.batch_x.rows_mut().into_iter().zip(&rows) {
            dst.assign(&self.data.images.row(i));
        }
        self.batch_y.clear();
        self.batch_y
            .extend(rows.iter().map(|&i| self.data.labels[i]));
    }

    /// Fills `self.grad` with the gradient of the next batch, plain or DP-SGD's noisy
    /// clipped mean; returns the batch loss and the samples it stands for (DP: the
    /// expected batch size, so that the weight reveals nothing of the draw).
    fn batch_gradient(&mut self, batch_size: usize) -> (f32, usize) {
        let Some(config) = self.dp.as_ref().map(|dp| dp.config) else {
            self.next_batch(batch_size);
            let loss = self.model.loss_and_gradient_into(
                self.batch_x.view(),
                &self.batch_y,
                &mut self.grad,
            );
            return (loss, self.batch_y.len());
        };
        let expected = batch_size.min(self.data.len()).max(1);
        match config.sampling {
            Sampling::Poisson => self.poisson_batch(expected as f64 / self.data.len() as f64),
            Sampling::Shuffle => self.next_batch(batch_size),
        }
        let loss = if self.batch_y.is_empty() {
            self.grad.fill(0.0);
            0.0
        } else {
            self.model
                .clipped_gradient_sum_into(
                    self.batch_x.view(),
                    &self.batch_y,
                    config.max_grad_norm,
                    &mut self.grad,
                )
                .loss
        };
        let std = (config.noise_multiplier * f64::from(config.max_grad_norm)) as f32;
        if let Some(dp) = self.dp.as_mut() {
            add_gaussian_noise(&mut self.grad, std, &mut dp.rng);
            dp.steps += 1;
        }
        let inv = 1.0 / expected as f32;
        self.grad.iter_mut().for_each(|g| *g *= inv);
        (loss, expected)
    }

    /// One local optimizer step on the next batch; returns its loss and samples.
    fn local_step(&mut self, batch_size: usize) -> (f32, usize) {
        let (loss, samples) = self.batch_gradient(batch_size);
        self.optimizer.step(self.model.params_mut(), &self.grad);
        (loss, samples)
    }

    /// Computes this round's update with the given strategy, from the model last loaded.
    pub fn compute_update(&mut self, strategy: Strategy, batch_size: usize) -> Update {
        match strategy {
            Strategy::FedSgd => {
                let (loss, samples) = self.batch_gradient(batch_size);
                Update {
                    values: self.grad.clone(),
                    samples,
                    loss,
                }
            }
            Strategy::FedAvg { local_steps } => {
                self.round_start.clear();
                self.round_start.extend_from_slice(self.model.params());
                let mut loss = 0.0;
                let mut samples = 0;
                for _ in 0..local_steps {
                    let (step_loss, step_samples) = self.local_step(batch_size);
                    loss += step_loss;
                    samples += step_samples;
                }
                let values = self
                    .model
                    .params()
                    .iter()
                    .zip(&self.round_start)
                    .map(|(new, old)| new - old)
                    .collect();
                Update {
                    values,
                    samples,
                    loss: loss / local_steps.max(1) as f32,
                }
            }
        }
    }

    /// What a checkpoint holds of this client: its local optimizer, data order and its
    /// generator, DP steps. (The DP noise generator is not saved: a resumed client draws
    /// fresh noise from the OS, which is as private and needs no secret on disk. The model
    /// is the global one, in the party's state.)
    pub(crate) fn state(&self) -> ClientState {
        ClientState {
            optimizer: self.optimizer.state(),
            order: self.order.iter().map(|&i| i as u64).collect(),
            cursor: self.cursor as u64,
            rng: RngState::of(&self.rng),
            dp_steps: self.dp.as_ref().map(|dp| dp.steps),
        }
    }

    /// Restores a [`Client::state`], checking everything against this client (the file it
    /// came from is input): moment lengths, that the order is a permutation of this shard,
    /// the cursor within it, a DP state exactly when the plan has one.
    pub(crate) fn restore(&mut self, state: ClientState) -> Result<(), ClientStateError> {
        let n = self.data.len();
        let mut seen = vec![false; n];
        let order = state
            .order
            .iter()
            .map(|&i| {
                let i = usize::try_from(i).ok().filter(|&i| i < n && !seen[i]);
                if let Some(i) = i {
                    seen[i] = true;
                }
                i
            })
            .collect::<Option<Vec<usize>>>()
            .filter(|o| o.len() == n)
            .ok_or(ClientStateError::Order { samples: n })?;
        let cursor = usize::try_from(state.cursor)
            .ok()
            .filter(|&c| c <= n)
            .ok_or(ClientStateError::Cursor {
                found: state.cursor,
                samples: n,
            })?;
        if state.dp_steps.is_some() != self.dp.is_some() {
            return Err(ClientStateError::Dp {
                expected: self.dp.is_some(),
            });
        }
        self.optimizer.restore(state.optimizer)?;
        self.order = order;
        self.cursor = cursor;
        self.rng = state.rng.restore();
        if let (Some(dp), Some(steps)) = (self.dp.as_mut(), state.dp_steps) {
            dp.steps = steps;
        }
        Ok(())
    }
}

/// Why a checkpoint's client state does not fit this client.
#[derive(Debug, thiserror::Error)]
pub enum ClientStateError {
    /// The data order is not a permutation of this shard.
    #[error("a data order that is not a permutation of {samples} samples")]
    Order {
        /// Samples in this shard.
        samples: usize,
    },
    /// The cursor is beyond the shard.
    #[error("data cursor {found}, expected at most {samples}")]
    Cursor {
        /// The saved cursor.
        found: u64,
        /// Samples in this shard.
        samples: usize,
    },
    /// A DP state where the plan has none, or none where it has one.
    #[error("{}", if *expected { "no DP state where the plan runs DP-SGD" } else { "a DP state where the plan runs no DP-SGD" })]
    Dp {
        /// Whether the plan runs DP-SGD.
        expected: bool,
    },
    /// The local optimizer's state does not fit.
    #[error(transparent)]
    Optimizer(#[from] crate::model::OptimizerStateError),
}

/// A client's state ([`Client::state`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ClientState {
    pub(crate) optimizer: crate::model::OptimizerState,
    pub(crate) order: Vec<u64>,
    pub(crate) cursor: u64,
    pub(crate) rng: RngState,
    pub(crate) dp_steps: Option<u64>,
}
