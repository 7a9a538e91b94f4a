//! Why a run, a party or a transport stopped: one enum per concern, each variant naming
//! what was expected and what came.

use super::config::ConfigError;
use super::envelope::EnvelopeError;
use super::party::{PublishedError, SealError, SnapshotError};
use super::server::{PartyId, Refusal, Round};
use crate::data::DataError;
use crate::he::csprng::EntropyError;
use crate::model::ModelError;
use crate::quant::QuantError;

/// Why a run could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting out of range.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The data could not be split as asked.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model could not be built.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No fixed-point encoding has the headroom for this many parties.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// The secure generator (DP noise, input perturbation) could not be seeded.
    #[error("secure random generator: {0}")]
    Entropy(#[from] EntropyError),
    /// A secure-aggregation identity could not be made.
    #[error(transparent)]
    Identity(#[from] crate::secagg::IdentityError),
    /// A secure-aggregation roster could not be made.
    #[error(transparent)]
    Roster(#[from] crate::secagg::RosterError),
    /// A party's shard of the partition is empty.
    #[error("{party} has no training samples; use fewer parties or a larger Dirichlet alpha")]
    EmptyShard {
        /// The party.
        party: PartyId,
    },
    /// `he` mode without the shared key.
    #[error("privacy he needs the shared key")]
    MissingKey,
    /// DP-PCA in a party of a deployment: the projection needs every party's noisy
    /// covariance, which only a federation run in one process has.
    #[error(
        "dp_pca needs every party's noisy covariance before training: it runs in one process \
         (train, dp-sweep, dp-compare), not in a deployment's parties"
    )]
    PcaNeedsOneProcess,
    /// The server could not be set up.
    #[error("server: {0}")]
    Server(#[source] ConfigError),
    /// A party of a federation run in this process failed.
    #[error("{party}: {source}")]
    Party {
        /// The party.
        party: PartyId,
        /// What failed.
        source: Box<PartyError>,
    },
    /// The parties' models differ at the end: they did not apply the same aggregates.
    #[error("party models diverged: {party} differs from party 0")]
    Diverged {
        /// The first party whose model differs from party 0's.
        party: PartyId,
    },
    /// Training diverged: a model's parameters are NaN or infinite at the end.
    #[error(
        "training diverged: {party}'s model has {count} non-finite parameters (NaN or \
         infinite), the first at index {index}; try a lower learning rate (lr)"
    )]
    NonFinite {
        /// The first party whose model went non-finite.
        party: PartyId,
        /// How many parameters are not finite.
        count: usize,
        /// The first of them.
        index: usize,
    },
}

/// Why one party's run stopped.
#[derive(Debug, thiserror::Error)]
pub enum PartyError {
    /// The plan or the local data did not fit.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The checkpoint could not be read, written, or belongs to another run.
    #[error(transparent)]
    Checkpoint(#[from] super::checkpoint::CheckpointError),
    /// The transport failed.
    #[error("{round}: {source}")]
    Uplink {
        /// The round.
        round: Round,
        /// What failed.
        source: UplinkError,
    },
    /// Preparing an encryption failed.
    #[error("{round}: {source}")]
    Envelope {
        /// The round.
        round: Round,
        /// What failed.
        source: Box<EnvelopeError>,
    },
    /// Sealing this party's update failed.
    #[error("{round}: {source}")]
    Seal {
        /// The round.
        round: Round,
        /// What failed.
        source: Box<SealError>,
    },
    /// The server published a sum this party refuses (out of order, a party list the rules
    /// do not allow, bytes that do not open).
    #[error("{round}: refused the published sum: {source}")]
    Published {
        /// The round fetched.
        round: Round,
        /// What is wrong with it.
        source: Box<PublishedError>,
    },
    /// The sums since this party's round are gone and resyncing from the model snapshot
    /// failed.
    #[error(
        "{round}: the server no longer keeps this round's sum, and resyncing from its model snapshot failed: {source}"
    )]
    Resync {
        /// The round whose sum is gone.
        round: Round,
        /// What failed.
        source: Box<SnapshotError>,
    },
    /// The party machine could not be set up (key, model, rules).
    #[error(transparent)]
    Setup(#[from] super::plan::PlanPartyError),
    /// Secure aggregation could not be set up (an identity that is not the roster's, a
    /// low-order key).
    #[error(transparent)]
    SecAgg(#[from] crate::secagg::SecAggError),
    /// The plan runs secure aggregation and this party has no identity and roster.
    #[error(
        "the server runs secure aggregation ({mode}): give this party its identity and the \
         roster (join --identity, --roster, --roster-fingerprint)"
    )]
    NoCredentials {
        /// The plan's mode.
        mode: crate::secagg::Mode,
    },
    /// The party is not in the plan's federation.
    #[error("{party} is not in this federation of {parties} parties")]
    NotInFederation {
        /// The party.
        party: PartyId,
        /// Parties in the plan.
        parties: usize,
    },
}

/// What a server refused, in transport-neutral terms (the HTTP transport maps each to one
/// status code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The party did not authenticate (wrong or missing token).
    Unauthorized,
    /// The party is not in the federation.
    UnknownParty,
    /// Wrong round or a duplicate.
    Conflict,
    /// The aggregate asked for is no longer kept.
    Gone,
    /// The message is larger than any valid one.
    TooLarge,
    /// The message failed validation.
    Invalid,
    /// Nothing to answer yet (no model snapshot).
    NotFound,
    /// Any other refusal.
    Other,
}

impl From<&Refusal> for RefusalKind {
    fn from(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::UnknownParty { .. } => Self::UnknownParty,
            Refusal::WrongRound { .. }
            | Refusal::Duplicate { .. }
            | Refusal::NotYet { .. }
            | Refusal::NotInSet { .. }
            | Refusal::Snapshot { .. } => Self::Conflict,
            Refusal::Payload { .. } | Refusal::Context { .. } => Self::Invalid,
            Refusal::NoSuchAggregate { .. } => Self::Gone,
            Refusal::NoSnapshot { .. } => Self::NotFound,
        }
    }
}

/// Why an [`Uplink`](super::Uplink) call failed. [`UplinkError::is_transient`] tells a retry
/// policy whether asking again can help.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable {
        /// The server's address.
        server: String,
        /// What the transport said.
        reason: String,
    },
    /// The server refused the request.
    #[error("server refused ({kind:?}): {reason}")]
    Refused {
        /// What kind of refusal.
        kind: RefusalKind,
        /// The server's message.
        reason: String,
    },
    /// The server's answer does not parse.
    #[error("malformed answer from the server: {0}")]
    Malformed(#[from] MalformedAnswer),
    /// The federation in this process stopped because another party failed.
    #[error("the federation stopped: another party failed")]
    Stopped,
    /// The plan the server sent was refused.
    #[error("the server's plan is refused: {0}")]
    Plan(#[source] ConfigError),
}

impl UplinkError {
    /// Whether the same request may succeed later (the server was unreachable, or the
    /// connection broke), as opposed to a refusal or a malformed answer, which will not
    /// change.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// Whether the server no longer keeps what was asked for (a sum this party missed).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                kind: RefusalKind::Gone,
                ..
            }
        )
    }
}

/// A server answer that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum MalformedAnswer {
    /// The plan is not JSON of a [`Plan`](super::Plan).
    #[error("the plan does not parse: {0}")]
    Plan(#[from] serde_json::Error),
    /// A header the answer must carry is missing or malformed.
    #[error("{round}: missing or malformed {header} header")]
    Header {
        /// The round asked about.
        round: Round,
        /// The header's name.
        header: &'static str,
    },
}
