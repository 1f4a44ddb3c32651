//! TLS for gRPC listeners (rustls through tonic), when a certificate and key are given.

use std::path::Path;

use tonic::transport::{Identity, ServerTlsConfig};

/// Reads a PEM certificate chain and private key into a tonic server TLS config.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig, std::io::Error> {
    let cert = std::fs::read(cert).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read TLS certificate {}: {e}", cert.display()),
        )
    })?;
    let key = std::fs::read(key).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read TLS key {}: {e}", key.display()),
        )
    })?;
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
}
