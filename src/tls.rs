//! TLS on both sides, with rustls (ring provider): clients to the proxy (certificate and
//! key, optionally requiring client certificates signed by a CA) and the proxy to its
//! backends (trusted CA, server name for SNI and verification, optional client
//! certificate).

use crate::config::{BackendTlsConfig, ClientTlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why TLS material cannot be used; `Display` says which file and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file cannot be read, is not PEM, or holds no certificate.
    #[error("cannot read the {what} {path}: {detail}")]
    Certificates {
        /// `certificate`, `CA file`, `client certificate`.
        what: &'static str,
        /// The file.
        path: String,
        /// The reason.
        detail: String,
    },
    /// The private key file cannot be read.
    #[error("cannot read a private key from {path}: {detail}")]
    Key {
        /// The file.
        path: String,
        /// The reason.
        detail: String,
    },
    /// A CA's certificate cannot verify anything.
    #[error("the CA file {path} cannot be used: {detail}")]
    Ca {
        /// The file.
        path: String,
        /// The reason.
        detail: String,
    },
    /// The certificate and key do not make an identity.
    #[error("the certificate {cert} and key {key} do not make an identity: {detail}")]
    Identity {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// The reason.
        detail: String,
    },
    /// The server name to verify is no valid name.
    #[error("{name:?} is not a valid TLS server name: {detail}")]
    ServerName {
        /// The name.
        name: String,
        /// The reason.
        detail: String,
    },
    /// rustls refused the protocol versions (cannot happen with its defaults).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |detail: String| TlsError::Certificates {
        what,
        path: path.to_string(),
        detail,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail("it holds no certificate".into()));
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_string(),
        detail: e.to_string(),
    })
}

fn roots(path: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path, "CA file")? {
        store.add(c).map_err(|e| TlsError::Ca {
            path: path.to_string(),
            detail: format!("an unusable certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// The server side: what clients connecting to the proxy get.
pub fn server_config(cfg: &ClientTlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if cfg.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&cfg.client_ca)?),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Ca {
            path: cfg.client_ca.clone(),
            detail: e.to_string(),
        })?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(certs(&cfg.cert, "certificate")?, key(&cfg.key)?)
        .map_err(|e| TlsError::Identity {
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
            detail: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// How to reach one backend over TLS.
#[derive(Clone, Debug)]
pub struct Target {
    /// The client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The name sent in SNI and verified against the certificate.
    pub server_name: ServerName<'static>,
}

/// The client side, towards a backend at `addr` (its host is the default server name).
pub fn backend_target(cfg: &BackendTlsConfig, addr: &str) -> Result<Target, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&cfg.ca)?);
    let config = if cfg.cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder
            .with_client_auth_cert(certs(&cfg.cert, "client certificate")?, key(&cfg.key)?)
            .map_err(|e| TlsError::Identity {
                cert: cfg.cert.clone(),
                key: cfg.key.clone(),
                detail: e.to_string(),
            })?
    };
    let name = if cfg.server_name.is_empty() {
        host_of(addr).to_string()
    } else {
        cfg.server_name.clone()
    };
    let server_name = ServerName::try_from(name.clone()).map_err(|e| TlsError::ServerName {
        name: name.clone(),
        detail: e.to_string(),
    })?;
    Ok(Target {
        config: Arc::new(config),
        server_name,
    })
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A connection to a backend, plain or TLS.
#[derive(Debug)]
pub enum BackendStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl BackendStream {
    /// Connect `tcp` through TLS if `target` says so.
    pub async fn wrap(tcp: TcpStream, target: Option<&Target>) -> std::io::Result<BackendStream> {
        match target {
            None => Ok(BackendStream::Plain(tcp)),
            Some(t) => {
                let c = tokio_rustls::TlsConnector::from(t.config.clone());
                Ok(BackendStream::Tls(Box::new(
                    c.connect(t.server_name.clone(), tcp).await?,
                )))
            }
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_addresses() {
        assert_eq!(super::host_of("redis-1:6379"), "redis-1");
        assert_eq!(super::host_of("[::1]:6379"), "::1");
        assert_eq!(super::host_of("127.0.0.1:6379"), "127.0.0.1");
    }
}
