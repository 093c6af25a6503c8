//! The admin token: owns reading it from its file (refused when missing,
//! empty or readable by everyone) and checking a request's
//! `Authorization: Bearer TOKEN` against it in constant time. It never
//! shows the secret (not in `Debug`, logs or `/config`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::secret_file::{self, SecretFileError};

/// The bearer token that admin writes (PUT, POST, DELETE) need.
#[derive(Clone)]
pub struct Token {
    file: PathBuf,
    secret: Arc<[u8]>,
}

/// Why a token file was refused; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It could not be read, or it is not private, or too long.
    #[error("the admin token file: {0}")]
    File(#[from] SecretFileError),
    /// It holds nothing but whitespace.
    #[error("the admin token file {} is empty", file.display())]
    Empty {
        /// The file.
        file: PathBuf,
    },
}

impl Token {
    /// Reads the token from `file`: its content with surrounding
    /// whitespace trimmed. The file must exist, be readable, not be
    /// readable by everyone (`o+r`), and not be empty.
    pub fn load(file: &Path) -> Result<Self, TokenError> {
        let content = secret_file::read(file)?;
        let secret = content.trim_ascii();
        if secret.is_empty() {
            return Err(TokenError::Empty {
                file: file.to_owned(),
            });
        }
        Ok(Self {
            file: file.to_owned(),
            secret: secret.into(),
        })
    }

    /// The file it was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`. The
    /// comparison takes the same time wherever the first difference is.
    pub fn admits(&self, headers: &hyper::HeaderMap) -> bool {
        let Some(value) = headers.get(hyper::header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let scheme = b"bearer ";
        if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return false;
        }
        let offered = value[scheme.len()..].trim_ascii();
        bool::from(offered.ct_eq(&self.secret))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("file", &self.file)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && bool::from(self.secret.ct_eq(&other.secret))
    }
}

impl Eq for Token {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(name: &str, content: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rpcgate-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn headers(authorization: &str) -> hyper::HeaderMap {
        let mut headers = hyper::HeaderMap::new();
        headers.insert(hyper::header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn a_token_is_the_trimmed_content_and_only_it_is_admitted() {
        let token = Token::load(&file("ok", "  s3cret\n", 0o600)).unwrap();
        assert!(token.admits(&headers("Bearer s3cret")));
        assert!(token.admits(&headers("bearer s3cret")));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!token.admits(&headers(wrong)), "{wrong}");
        }
        assert!(!token.admits(&hyper::HeaderMap::new()));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        for (name, content, mode) in [("open", "t", 0o644), ("empty", " \n", 0o600)] {
            let path = file(name, content, mode);
            let error = Token::load(&path).unwrap_err().to_string();
            assert!(error.contains(&path.display().to_string()), "{error}");
        }
        let missing = std::env::temp_dir().join("rpcgate-no-such-token");
        let error = Token::load(&missing).unwrap_err().to_string();
        assert!(error.contains("rpcgate-no-such-token"), "{error}");
    }
}
