//! Turning a validated configuration and the data into the parties' starting state: shards,
//! clients on the common initial model, the test set, and each party's rounding generator.

use super::client::Client;
use super::config::{ConfigError, Field, Mode, Privacy, TrainConfig, ValidConfig};
use super::error::TrainError;
use super::server::PartyId;
use crate::data::{Dataset, Mnist, partition};
use crate::dp::{DpSgd, InputDp};
use crate::he::SecureRng;
use crate::model::{InputProjection, Mlp};

/// The parties' clients (all on the seeded initial model) and the test set.
pub(crate) struct Setup {
    /// One client per party trained here, in party order.
    pub clients: Vec<Client>,
    /// The test set (normalised like the training images under input DP, projected like
    /// them under DP-PCA).
    pub test: Dataset,
    /// The DP-PCA projection the data went through, which the final model takes with it.
    pub projection: Option<InputProjection>,
}

/// The clients of `config`'s parties (only party `only` if given) and the test set.
pub(crate) fn setup(
    config: &ValidConfig,
    data: &Mnist,
    only: Option<PartyId>,
) -> Result<Setup, TrainError> {
    let mut train = match config.train_subset {
        Some(n) => data.train.take(n),
        None => data.train.clone(),
    };
    let mut test = match config.test_subset {
        Some(n) => data.test.take(n),
        None => data.test.clone(),
    };
    if let Some(input_dp) = config.input_dp {
        let mut rng = SecureRng::from_os().map_err(TrainError::Entropy)?;
        input_dp.apply(&mut train.images, &mut rng);
        InputDp::normalize(&mut test.images);
    }
    let shards = shard_indices(config, &train)?;
    if let Some(empty) = shards.iter().position(Vec::is_empty) {
        return Err(TrainError::EmptyShard {
            party: party_id(empty),
        });
    }
    let projection = match config.pca() {
        None => None,
        Some(_) if only.is_some() => return Err(TrainError::PcaNeedsOneProcess),
        Some(pca) => {
            let projection = dp_pca(pca, &train, &shards)?;
            train.images = projection.project(train.images.view());
            test.images = projection.project(test.images.view());
            Some(projection)
        }
    };
    let initial = Mlp::with_activation(&config.layers, config.activation, config.seed)?;
    let largest = shards.iter().map(Vec::len).max().unwrap_or(0);
    let total_steps = config.optimizer_steps(largest);
    let mut clients = Vec::with_capacity(shards.len());
    for (index, indices) in shards.iter().enumerate() {
        let id = party_id(index);
        if only.is_some_and(|party| party != id) {
            continue;
        }
        let mut client = Client::new(
            id,
            train.subset(indices),
            initial.clone(),
            config.optimizer,
            config.lr,
            config.seed,
        );
        if let (Privacy::Dp, Some(dp)) = (config.privacy, config.dp) {
            client.enable_dp(dp, SecureRng::from_os().map_err(TrainError::Entropy)?);
        }
        client.set_lr_schedule(config.lr_schedule, total_steps);
        clients.push(client);
    }
    Ok(Setup {
        clients,
        test,
        projection,
    })
}

/// DP-PCA's projection for a run whose parties hold `shards` of `train`: every party
/// releases its shard's covariance with its own noise (drawn from its own
/// [`SecureRng`]), and the projection is on the top eigenvectors of their sum (see
/// [`crate::dp::noisy_covariance`]).
fn dp_pca(
    pca: crate::dp::DpPca,
    train: &Dataset,
    shards: &[Vec<usize>],
) -> Result<InputProjection, TrainError> {
    let d = train.images.ncols();
    let mut sum = vec![0.0f64; d * d];
    for indices in shards {
        let shard = train.subset(indices);
        let mut rng = SecureRng::from_os().map_err(TrainError::Entropy)?;
        let released =
            crate::dp::noisy_covariance(shard.images.view(), pca.noise_multiplier, &mut rng);
        sum.iter_mut().zip(&released).for_each(|(s, r)| *s += r);
    }
    Ok(crate::dp::principal_components(&sum, d, pca.components)?)
}

/// Party index `index` of a validated configuration (at most `MAX_PARTIES`, so it fits).
fn party_id(index: usize) -> PartyId {
    PartyId(u32::try_from(index).unwrap_or(u32::MAX))
}

/// The indices of the training examples of each party the mode trains.
fn shard_indices(config: &TrainConfig, train: &Dataset) -> Result<Vec<Vec<usize>>, TrainError> {
    Ok(match config.mode {
        Mode::Centralized => vec![(0..train.len()).collect()],
        Mode::Local | Mode::Federated => {
            let mut parts = partition(
                &train.labels,
                config.parties,
                config.partition,
                config.seed ^ 0x5EED_05A4D,
            )?;
            if config.mode == Mode::Local {
                parts.truncate(1);
            }
            parts
        }
    })
}

/// The DP-SGD sampling rate (batch / largest IID shard) and the number of steps of the
/// whole run `config` on a training set of `train_size` images: what the accountant needs.
pub fn sampling_rate_and_steps(config: &TrainConfig, train_size: usize) -> (f64, u64) {
    let shard = config.largest_iid_shard(train_size);
    let q = (config.batch_size as f64 / shard.max(1) as f64).min(1.0);
    let rounds = config.rounds_per_epoch(shard).saturating_mul(config.epochs);
    let steps = rounds.saturating_mul(config.strategy.steps_per_round()) as u64;
    (q, steps)
}

/// Sets `config`'s DP noise multiplier to the smallest that keeps the whole run within
/// `target_epsilon` (to within 1%) by its own accountant, for a training set of `train_size` images split as
/// `config` says (IID shard sizes); returns it. Refused unless `config` is a DP run.
pub fn calibrate_noise(
    config: &mut TrainConfig,
    train_size: usize,
    target_epsilon: f64,
) -> Result<f64, ConfigError> {
    let Some(dp) = config.dp else {
        return Err(ConfigError::Needs {
            field: Field::TargetEpsilon,
            needs: "privacy dp".into(),
        });
    };
    super::config::check_positive(Field::TargetEpsilon, target_epsilon)?;
    let (q, steps) = sampling_rate_and_steps(config, train_size);
    let sigma = match dp.pca {
        None => dp
            .accountant
            .noise_multiplier_for(target_epsilon, dp.delta, q, steps),
        // The DP-PCA release spends part of the budget: σ for the rest.
        Some(_) => crate::dp::smallest_noise_for(target_epsilon, |sigma| {
            DpSgd {
                noise_multiplier: sigma,
                ..dp
            }
            .epsilon(q, steps)
        }),
    }
    .ok_or_else(|| ConfigError::Invalid {
        field: Field::TargetEpsilon,
        expected: match dp.pca {
            None => format!("an epsilon reachable in {steps} steps at sampling rate {q}"),
            Some(pca) => format!(
                "an epsilon reachable in {steps} steps at sampling rate {q} after the DP-PCA \
                 release (sigma_p {} alone spends {:.3})",
                pca.noise_multiplier,
                pca.epsilon(dp.accountant, dp.delta)
            ),
        },
        found: target_epsilon.to_string(),
    })?;
    if let Some(dp) = config.dp.as_mut() {
        dp.noise_multiplier = sigma;
    }
    Ok(sigma)
}
