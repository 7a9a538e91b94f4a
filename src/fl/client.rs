//! A party: its own data, its own copy of the model, its own optimizer.

use super::train::Strategy;
use crate::data::{Dataset, IMAGE_PIXELS};
use crate::model::{Mlp, Optimizer, OptimizerKind};
use ndarray::Array2;
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

/// One party in a training run.
#[derive(Clone, Debug)]
pub struct Client {
    id: usize,
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
}

impl Client {
    /// A client with party index `id`, its local `data`, a copy of the common
    /// initial `model`, and a fresh optimizer. `seed` fixes its batch order.
    pub fn new(
        id: usize,
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
            data,
            optimizer: Optimizer::new(optimizer, lr, n),
            model,
            cursor: 0,
            rng: ChaCha20Rng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            batch_x: Array2::zeros((0, IMAGE_PIXELS)),
            batch_y: Vec::new(),
            grad: vec![0.0; n],
            round_start: Vec::new(),
        };
        client.order.shuffle(&mut client.rng);
        client
    }

    /// The party index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Number of local training samples.
    pub fn num_samples(&self) -> usize {
        self.data.len()
    }

    /// The client's current model.
    pub fn model(&self) -> &Mlp {
        &self.model
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
            self.batch_x = Array2::zeros((take, IMAGE_PIXELS));
        }
        for (mut dst, &i) in self.batch_x.rows_mut().into_iter().zip(rows) {
            dst.assign(&self.data.images.row(i));
        }
        self.batch_y.clear();
        self.batch_y
            .extend(rows.iter().map(|&i| self.data.labels[i]));
    }

    /// One local optimizer step on the next batch; returns its loss.
    fn local_step(&mut self, batch_size: usize) -> f32 {
        self.next_batch(batch_size);
        let loss =
            self.model
                .loss_and_gradient_into(self.batch_x.view(), &self.batch_y, &mut self.grad);
        self.optimizer.step(self.model.params_mut(), &self.grad);
        loss
    }

    /// Computes this round's update with the given strategy.
    pub fn compute_update(&mut self, strategy: Strategy, batch_size: usize) -> Update {
        match strategy {
            Strategy::FedSgd => {
                self.next_batch(batch_size);
                let loss = self.model.loss_and_gradient_into(
                    self.batch_x.view(),
                    &self.batch_y,
                    &mut self.grad,
                );
                Update {
                    values: self.grad.clone(),
                    samples: self.batch_y.len(),
                    loss,
                }
            }
            Strategy::FedAvg { local_steps } => {
                self.round_start.clear();
                self.round_start.extend_from_slice(self.model.params());
                let mut loss = 0.0;
                let mut samples = 0;
                for _ in 0..local_steps {
                    loss += self.local_step(batch_size);
                    samples += self.batch_y.len();
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

    /// Applies the round's aggregate: FedSGD steps the optimizer with the mean
    /// gradient; FedAvg sets the model to the round's starting point plus the
    /// mean delta. Every client applies the same aggregate, so models stay equal.
    ///
    /// Panics if `aggregate` does not have the model's length: aggregates are
    /// produced by this crate from updates of that length.
    pub fn apply(&mut self, strategy: Strategy, aggregate: &[f32]) {
        assert_eq!(aggregate.len(), self.model.num_params(), "aggregate length");
        match strategy {
            Strategy::FedSgd => self.optimizer.step(self.model.params_mut(), aggregate),
            Strategy::FedAvg { .. } => {
                for ((p, start), d) in self
                    .model
                    .params_mut()
                    .iter_mut()
                    .zip(&self.round_start)
                    .zip(aggregate)
                {
                    *p = start + d;
                }
            }
        }
    }
}
