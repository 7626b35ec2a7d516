//! Sealing upstream credentials, and the secret files Switchyard generates.
//!
//! Credentials are sealed with AES-256-GCM under the master key: a random 96-bit nonce per seal,
//! the account id as associated data (a sealed key copied onto another account does not open).
//! Sealed form: `v1.` + hex(nonce ‖ ciphertext ‖ tag).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

const SEALED_PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 64 hex characters")]
    BadMasterKey,
    #[error(
        "{path} holds no master key (64 hex characters): restore it from a backup. Deleting it \
         makes a new key, under which no stored account credential opens (each account would \
         have to be added again)"
    )]
    BadMasterKeyFile { path: String },
    #[error("a sealed credential could not be opened (wrong master key or corrupt data)")]
    Open,
    #[error("sealing failed")]
    Seal,
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_hex(hex_key: &str) -> Result<MasterKey, CryptoError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| CryptoError::BadMasterKey)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadMasterKey)?;
        Ok(MasterKey(cipher))
    }

    /// The configured key, else `<data_dir>/master-key`, created (mode 0600) on first use.
    pub fn resolve(configured: Option<&str>, data_dir: &Path) -> Result<MasterKey, CryptoError> {
        if let Some(hex_key) = configured {
            return MasterKey::from_hex(hex_key);
        }
        let path = data_dir.join("master-key");
        let hex_key = read_or_create_secret(&path, || {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            hex::encode(key)
        })?;
        MasterKey::from_hex(&hex_key).map_err(|_| CryptoError::BadMasterKeyFile {
            path: path.display().to_string(),
        })
    }

    pub fn seal(&self, account_id: &str, plaintext: &str) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: account_id.as_bytes(),
        };
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", hex::encode(out)))
    }

    pub fn open(&self, account_id: &str, sealed: &str) -> Result<String, CryptoError> {
        let raw = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|raw| raw.len() > NONCE_LEN)
            .ok_or(CryptoError::Open)?;
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: account_id.as_bytes(),
        };
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }
}

/// Reads a secret file, or creates it with `make()` readable by the owner only. Returns the
/// secret trimmed of surrounding whitespace.
pub fn read_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<String, CryptoError> {
    let io_err = |source| CryptoError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(s) => return Ok(s.trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let secret = make();
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(secret.as_bytes()).map_err(io_err)?;
            file.write_all(b"\n").map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(io_err),
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_binds_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::resolve(None, dir.path()).unwrap();
        let sealed = key.seal("acct_1", "sk-ant-secret").unwrap();
        assert!(!sealed.contains("sk-ant-secret"));
        assert_eq!(key.open("acct_1", &sealed).unwrap(), "sk-ant-secret");
        assert!(
            key.open("acct_2", &sealed).is_err(),
            "associated data binds the account"
        );
        // Two seals of the same secret differ (random nonce).
        assert_ne!(sealed, key.seal("acct_1", "sk-ant-secret").unwrap());
        // The generated key file persists and is private.
        let again = MasterKey::resolve(None, dir.path()).unwrap();
        assert_eq!(again.open("acct_1", &sealed).unwrap(), "sk-ant-secret");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_master_key_file_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master-key");
        for content in ["", "\n", "not a key", &"ab".repeat(31)] {
            std::fs::write(&path, content).unwrap();
            let msg = MasterKey::resolve(None, dir.path())
                .unwrap_err()
                .to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("restore it from a backup"), "{msg}");
        }
        // The file is left as it was, for the operator to restore.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ab".repeat(31));
    }

    #[test]
    fn a_different_master_key_cannot_open() {
        let a = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let b = MasterKey::from_hex(&"22".repeat(32)).unwrap();
        let sealed = a.seal("x", "secret").unwrap();
        assert!(b.open("x", &sealed).is_err());
        assert!(MasterKey::from_hex("abcd").is_err());
    }
}
