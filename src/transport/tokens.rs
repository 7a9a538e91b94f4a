//! The per-party bearer tokens of a federation, and the tokens file the server issues.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// Errors reading or writing a tokens file.
#[derive(Debug, thiserror::Error)]
#[error("tokens file {path}: {reason}")]
pub struct TokensError {
    /// The file.
    pub path: std::path::PathBuf,
    /// What was wrong.
    pub reason: String,
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
        }
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
        let err = |reason: String| TokensError {
            path: path.to_path_buf(),
            reason,
        };
        if path.exists() {
            let issued = read_tokens(path)?;
            if issued.len() != parties {
                return Err(err(format!(
                    "holds {} tokens, expected one per party ({parties}); delete it to issue new ones",
                    issued.len()
                )));
            }
            return Ok(issued);
        }
        let (_, issued) = Self::generate(parties).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let json = serde_json::to_string_pretty(&issued).map_err(|e| err(e.to_string()))?;
        let mut file = crate::he::keys::create_private(path).map_err(|e| err(e.to_string()))?;
        file.write_all(json.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        Ok(issued)
    }

    /// Party `party`'s token from a tokens file.
    pub fn read_party(path: &Path, party: u32) -> Result<String, TokensError> {
        read_tokens(path)?
            .into_iter()
            .nth(party as usize)
            .ok_or_else(|| TokensError {
                path: path.to_path_buf(),
                reason: format!("no token for party {party}"),
            })
    }
}

fn read_tokens(path: &Path) -> Result<Vec<String>, TokensError> {
    let err = |reason: String| TokensError {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| err(e.to_string()))?;
    crate::he::keys::check_private(path, &metadata).map_err(|e| err(e.to_string()))?;
    let mut text = String::new();
    file.take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(format!("expected a JSON list of tokens: {e}")))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::new_with_prefix(b"hefl/v1/token\0")
        .chain_update(token.as_bytes())
        .finalize()
        .into()
}
