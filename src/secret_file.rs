//! Secret files: owns reading a credential from a file an operator names
//! (the admin token, etcd's password): opened once, so the mode checked
//! is that of the file read; refused when every user may read it; bounded
//! in size. Callers decide what of its content is the secret.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The largest secret file read: a credential is a line, not a document.
pub const MAX_BYTES: u64 = 4096;

/// Why a secret file was refused; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It could not be opened or read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Every user may read it.
    #[error(
        "{} is readable by every user (mode {mode:o}); make it private (chmod o-rwx)",
        file.display()
    )]
    WorldReadable {
        /// The file.
        file: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It is longer than a credential would be.
    #[error("{} is over {MAX_BYTES} bytes", file.display())]
    TooLong {
        /// The file.
        file: PathBuf,
    },
}

/// The content of the secret file `file`, whole.
///
/// # Errors
///
/// It cannot be read, every user may read it, or it is over [`MAX_BYTES`].
pub fn read(file: &Path) -> Result<Vec<u8>, SecretFileError> {
    let read_error = |source| SecretFileError::Read {
        file: file.to_owned(),
        source,
    };
    let mut opened = std::fs::File::open(file).map_err(read_error)?;
    let mode = opened.metadata().map_err(read_error)?.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(SecretFileError::WorldReadable {
            file: file.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let mut content = Vec::new();
    (&mut opened)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(read_error)?;
    if content.len() as u64 > MAX_BYTES {
        return Err(SecretFileError::TooLong {
            file: file.to_owned(),
        });
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("rpcgate-secret-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_file_is_read_whole() {
        let path = file("ok", b" s3cret \n", 0o600);
        assert_eq!(read(&path).unwrap(), b" s3cret \n");
    }

    #[test]
    fn a_world_readable_a_missing_and_a_long_file_are_refused_naming_the_file() {
        let open = file("open", b"x", 0o644);
        let long = file("long", &[b'x'; MAX_BYTES as usize + 1], 0o600);
        let missing = std::env::temp_dir().join("rpcgate-secret-missing");
        for (path, what) in [
            (&open, "readable by every user"),
            (&long, "over 4096 bytes"),
            (&missing, "cannot read"),
        ] {
            let error = read(path).unwrap_err().to_string();
            assert!(error.contains(what), "{error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
        }
    }
}
