//! # hefl: federated learning with homomorphically encrypted aggregation
//!
//! Parties who may not share data train one MLP together. No plaintext
//! gradient leaves a client in HE mode:
//!
//! 1. every client computes the gradient (or, with local steps, the model
//!    delta) of its MLP on its own data ([`fl::Client`]);
//! 2. it quantizes the vector to fixed-point integers ([`quant`]) and encrypts
//!    it under the key all clients share, as packed GLWE ciphertexts
//!    ([`he`], built on `tfhe::core_crypto`; rayon spreads the work over cores);
//! 3. the server adds the ciphertexts; it holds no key and sees only
//!    ciphertexts, party ids and counts;
//! 4. every client decrypts the sum, decodes and averages it, and steps its
//!    local model. All clients start from the same seeded weights and apply the
//!    same aggregate, so their models stay identical without the server ever
//!    holding one.
//!
//! The plain federated mode, the DP variant (DP-SGD on every client, with a
//! privacy-loss-distribution accountant or Rényi DP on request, [`dp`]; HE mode
//! itself has no DP option) and the local and centralized baselines run in the
//! same loop ([`fl::run`]) so that users can see what collaboration gains and
//! what each kind of privacy costs.
//!
//! ## Threat model
//!
//! The server is honest but curious: it follows the protocol and tries to learn
//! from what it sees. Clients do not collude with the server. Every client holds
//! the same secret key, so anyone holding it can decrypt any single client's
//! ciphertext: the server must never see the key, and clients must not see each
//! other's individual ciphertexts. Under `--secure-agg strict` ([`secagg`]) each
//! party also blinds its update with pairwise masks inside the plaintext, so that
//! one party's ciphertext is uniform noise to any key holder lacking one of its
//! partners' secrets, and a server colluding with clients learns only the sum of
//! the honest parties' updates; [`secagg`]'s docs state that threat model and what
//! it does not provide. Threshold keys are future work. What a malicious
//! client can and cannot do, and why publishing mask seeds and rounding
//! ciphertexts is safe, is in the guide `docs/security.md`.
//!
//! The server cannot decrypt, by construction: [`fl::Server`] is generic over
//! the [`fl::Summable`] payload it folds, and in `he` mode that payload is
//! [`he::CompactVector`], so every byte it keeps is ciphertext or public
//! metadata (key id, mask seeds, lengths, party ids). It is built from a
//! [`he::Expected`] (a public key id and a length), never from a key;
//! decryption exists only as a method of [`he::keys::SecretKey`], which no
//! server type holds or receives.
//!
//! ## Layers
//!
//! Dependencies point one way. At the bottom, [`he::csprng`] (OS seeding and
//! tfhe's AES-CTR CSPRNG) and [`secret_file`] (files that hold secrets: mode
//! 0600, checked on read, replaced atomically) depend on nothing else in hefl.
//! [`data`], [`model`], [`quant`], [`he`] and [`dp`] know nothing of networks
//! or of the protocol ([`dp`] draws its noise from [`he::csprng::SecureRng`];
//! [`he`] keeps its key files through [`secret_file`], and [`model`] its model files
//! through the same atomic write); [`secagg`] (secure aggregation's identities, roster,
//! blinds and canaries) sits on [`he`] and the protocol's named types; [`fl`] composes them
//! into two state machines without I/O, the party ([`fl::Party`]) and the
//! server ([`fl::Server`], behind the [`fl::Hub`] that gives it a clock),
//! and the drivers that move their bytes: one training loop
//! ([`fl::run_party`]) against one hub, in one process through
//! [`fl::HubUplink`] and over the network through [`transport`], which only
//! moves bytes between parties and the hub; the Python binding drives the same
//! party machine from Flower messages. [`perf`] measures what each mode
//! costs; [`report`] and the CLI only present results.
//!
//! ## Guides
//!
//! These pages document the API. The repository's guides, in `docs/`, cover
//! what a user of the `hefl` command and of a federation needs beyond it:
//! `docs/usage.md` (commands and modes), `docs/deployment.md` (`hefl serve` and
//! `hefl join`: limits, TLS, restarts, what to do when things fail),
//! `docs/flower-and-python.md`, `docs/dp.md` (the accountants, tuning, the
//! comparison with HE), `docs/performance.md` (every measured table and how to
//! reproduce it), `docs/security.md`, `docs/formats.md` (every message and file)
//! and `docs/architecture.md`.

#![warn(missing_docs)]

#[cfg(feature = "mimalloc")]
pub mod alloc;
pub mod data;
pub mod dp;
pub mod fl;
pub mod he;
pub mod model;
pub mod perf;
pub mod quant;
pub mod report;
pub mod secagg;
pub mod secret_file;
pub mod transport;
