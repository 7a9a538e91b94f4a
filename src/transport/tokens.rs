//! The per-party bearer tokens of a federation, and the tokens file the server issues
//! (described for operators in `docs/formats.md#the-tokens-file`).

use crate::secret_file::SecretFileError;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Shortest token accepted from a tokens file (issued tokens have 64 hex characters).
pub const MIN_TOKEN_LEN: usize = 16;

/// Longest token accepted from a tokens file.
pub const MAX_TOKEN_LEN: usize = 256;

/// Largest tokens file read (a million parties' tokens fit).
const MAX_TOKENS_FILE: u64 = 128 << 20;

/// Errors reading or writing a tokens file.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read or written, or others may read it.
    #[error("tokens file: {0}")]
    File(#[from] SecretFileError),
    /// The file's contents are not what the server issued.
    #[error("tokens file {path}: {reason}")]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("issuing tokens: {0}")]
    Entropy(#[from] getrandom::Error),
}

/// The per-party bearer tokens of a federation. The server keeps only their SHA-256.
///
/// ```
/// use hefl::transport::Tokens;
///
/// let (tokens, issued) = Tokens::generate(3)?;
/// assert_eq!(issued.len(), 3);
/// assert!(tokens.check(1, &issued[1]));
/// assert!(!tokens.check(1, &issued[0]));
/// assert!(!tokens.check(7, &issued[0]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
    /// The operator's token (`GET /v1/status`), if the server has one.
    operator: Option<[u8; 32]>,
}

impl Tokens {
    /// Fresh tokens for `parties` parties: 32 bytes each from the OS CSPRNG, hex-encoded.
    pub fn generate(parties: usize) -> Result<(Self, Vec<String>), getrandom::Error> {
        let issued = (0..parties)
            .map(|_| {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)?;
                Ok(hex::encode(bytes))
            })
            .collect::<Result<Vec<_>, getrandom::Error>>()?;
        Ok((Self::from_issued(&issued), issued))
    }

    /// The tokens as issued (party i holds `issued[i]`).
    pub fn from_issued(issued: &[String]) -> Self {
        Self {
            digests: issued.iter().map(|t| digest(t)).collect(),
            operator: None,
        }
    }

    /// These tokens, and `operator` as the operator's (the only token `GET /v1/status`
    /// takes; no party's token does).
    pub fn with_operator(mut self, operator: &str) -> Self {
        self.operator = Some(digest(operator));
        self
    }

    /// Whether `presented` is the operator's token (never when the server has none).
    pub fn check_operator(&self, presented: &str) -> bool {
        self.operator.is_some_and(|d| d == digest(presented))
    }

    /// Where the operator's token is kept beside the tokens file at `tokens`:
    /// `tokens.json` -> `tokens.operator`.
    pub fn operator_path(tokens: &Path) -> std::path::PathBuf {
        tokens.with_extension("operator")
    }

    /// Reads the operator's token from `path` (a JSON list of one token, as a tokens file),
    /// or creates it with a fresh token (mode 0600) if there is none.
    pub fn load_or_create_operator(path: &Path) -> Result<String, TokensError> {
        let mut one = Self::load_or_create(path, 1)?;
        Ok(one.remove(0))
    }

    /// Whether `presented` is party `party`'s token.
    pub fn check(&self, party: u32, presented: &str) -> bool {
        self.digests
            .get(party as usize)
            .is_some_and(|d| *d == digest(presented))
    }

    /// Reads the tokens file at `path` (a JSON list, party i's token at index i), or creates
    /// one with fresh tokens for `parties` parties (mode 0600) if there is none.
    pub fn load_or_create(path: &Path, parties: usize) -> Result<Vec<String>, TokensError> {
        if path.exists() {
            let issued = read_tokens(path)?;
            if issued.len() != parties {
                return Err(TokensError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!(
                        "holds {} tokens, expected one per party ({parties}); delete it to \
                         issue new ones",
                        issued.len()
                    ),
                });
            }
            return Ok(issued);
        }
        let (_, issued) = Self::generate(parties)?;
        crate::secret_file::write_private_json(path, &issued, false)?;
        Ok(issued)
    }

    /// Party `party`'s token from a tokens file.
    pub fn read_party(path: &Path, party: u32) -> Result<String, TokensError> {
        read_tokens(path)?
            .into_iter()
            .nth(party as usize)
            .ok_or_else(|| TokensError::Invalid {
                path: path.to_path_buf(),
                reason: format!("no token for party {party}"),
            })
    }
}

fn read_tokens(path: &Path) -> Result<Vec<String>, TokensError> {
    let bytes = crate::secret_file::read_private(path, MAX_TOKENS_FILE)?;
    parse_tokens(&bytes, path)
}

/// Parses and validates the contents of a tokens file (a JSON list, party i's token at
/// index i), as the server and the parties do after reading it. `path` only names the
/// source in errors.
///
/// ```
/// use hefl::transport::parse_tokens;
/// use std::path::Path;
///
/// let tokens = parse_tokens(br#"["0123456789abcdef0123"]"#, Path::new("tokens.json"))?;
/// assert_eq!(tokens.len(), 1);
/// assert!(parse_tokens(b"{}", Path::new("tokens.json")).is_err());
/// // A token a header cannot carry is refused, not kept to fail every request.
/// assert!(parse_tokens(br#"["0123456789abcdef 0123"]"#, Path::new("t")).is_err());
/// assert!(parse_tokens(b"[\"0123456789abcdef0123\\r\\n\"]", Path::new("t")).is_err());
/// # Ok::<(), hefl::transport::TokensError>(())
/// ```
pub fn parse_tokens(bytes: &[u8], path: &Path) -> Result<Vec<String>, TokensError> {
    let invalid = |reason: String| TokensError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let tokens: Vec<String> = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("expected a JSON list of tokens: {e}")))?;
    if let Some(party) = tokens
        .iter()
        .position(|t| !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&t.len()))
    {
        return Err(invalid(format!(
            "party {party}'s token has {} characters, expected {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}",
            tokens[party].len()
        )));
    }
    // What an `authorization: Bearer` header can carry as it is (RFC 6750's token68 without
    // padding): a token with spaces, CR/LF or non-ASCII could never authenticate.
    let usable = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    if let Some((party, bad)) = tokens
        .iter()
        .enumerate()
        .find_map(|(p, t)| t.chars().find(|&c| !usable(c)).map(|c| (p, c)))
    {
        return Err(invalid(format!(
            "party {party}'s token has the character {bad:?}, expected letters, digits and - . _ ~ + / only (a header cannot carry it)"
        )));
    }
    // A shared token would let one party submit as another.
    let mut first_holder = std::collections::HashMap::with_capacity(tokens.len());
    for (party, token) in tokens.iter().enumerate() {
        if let Some(earlier) = first_holder.insert(token.as_str(), party) {
            return Err(invalid(format!(
                "party {party}'s token is the same as party {earlier}'s, expected a distinct \
                 token per party; delete the file to issue new ones"
            )));
        }
    }
    Ok(tokens)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::new_with_prefix(b"hefl/v1/token\0")
        .chain_update(token.as_bytes())
        .finalize()
        .into()
}
