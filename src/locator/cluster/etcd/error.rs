//! What can go wrong talking to etcd, classified: what retrying may fix,
//! and what is a misconfiguration (certificates, credentials, rights).

use super::*;

/// Why an etcd call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached, or the connection broke.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// etcd answered with an error status or a body we do not understand.
    #[error("etcd refused the call: {0}")]
    Refused(String),
    /// The TLS handshake with etcd failed: its certificate is not trusted
    /// (`etcd_ca_file`), or it refused ours (`etcd_cert_file`).
    #[error("etcd TLS failed: {0}")]
    Tls(String),
    /// etcd refused our credentials or their rights: a bad password, no
    /// user while etcd has auth enabled, or no permission on the prefix.
    #[error("etcd auth failed: {0}")]
    Auth(String),
    /// etcd did not accept the auth token (expired or revoked); the client
    /// authenticates again and retries once before returning this.
    #[error("etcd rejected the auth token: {0}")]
    TokenRejected(String),
}

impl EtcdError {
    /// Whether this is a setting that retrying will not fix (TLS trust,
    /// client certificate, credentials), as opposed to etcd being away.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, Self::Tls(_) | Self::Auth(_) | Self::TokenRejected(_))
    }
}

/// A client setting that was refused: the `[cluster]` key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster.{key}: {reason}")]
pub struct EtcdSetupError {
    /// The key under `[cluster]` (`etcd`, `etcd_ca_file`, ...).
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

pub(super) fn setup_error(key: &'static str, reason: impl Into<String>) -> EtcdSetupError {
    EtcdSetupError {
        key,
        reason: reason.into(),
    }
}

/// A failed connection or exchange: a TLS error when rustls is in the
/// chain of causes (an untrusted etcd certificate, or etcd's alert when it
/// refused ours), else etcd is unreachable.
pub(super) fn transport_error(
    authority: &str,
    error: &(dyn std::error::Error + 'static),
) -> EtcdError {
    let mut next = Some(error);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) => {
                    " (is etcd_ca_file the CA that signed etcd's certificate, for this host name?)"
                }
                rustls::Error::AlertReceived(_) => {
                    " (etcd refused the handshake: does it want a client certificate, \
                     etcd_cert_file and etcd_key_file, signed by a CA it trusts?)"
                }
                _ => "",
            };
            return EtcdError::Tls(format!("{authority}: {tls}{hint}"));
        }
        next = e.source();
    }
    EtcdError::Unreachable(format!("{authority}: {error}"))
}

/// An `{"error", "message", "code"}` answer of the JSON gateway.
pub(super) fn classify(object: &serde_json::Value) -> EtcdError {
    let message = object["message"]
        .as_str()
        .or_else(|| object["error"].as_str())
        .map_or_else(|| object["error"].to_string(), str::to_owned);
    classify_text(&message, int(&object["code"]))
}

/// Sorts an error message of etcd (with its gRPC code when known) into
/// what the caller can act on, with a hint for the settings involved.
pub(super) fn classify_text(message: &str, code: Option<i64>) -> EtcdError {
    if code == Some(16) || message.contains("invalid auth token") {
        EtcdError::TokenRejected(message.to_owned())
    } else if message.contains("user name is empty") {
        EtcdError::Auth(format!(
            "{message} (etcd has auth enabled: set etcd_user and etcd_password_file)"
        ))
    } else if message.contains("permission denied") {
        EtcdError::Auth(format!(
            "{message} (with etcd's auth enabled, set etcd_user and etcd_password_file; \
             the user needs read-write permission on the cluster prefix)"
        ))
    } else if message.contains("authentication is not enabled") {
        EtcdError::Auth(format!(
            "{message} (etcd_user is set but etcd has auth disabled: enable it, or remove etcd_user)"
        ))
    } else if message.contains("authentication failed") {
        EtcdError::Auth(message.to_owned())
    } else if message.contains("CommonName of client") {
        EtcdError::Tls(format!(
            "{message} (with auth enabled, etcd's JSON gateway refuses a client certificate \
             that has a Common Name: issue etcd_cert_file without one)"
        ))
    } else {
        EtcdError::Refused(message.to_owned())
    }
}
