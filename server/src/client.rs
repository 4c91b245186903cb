//! The server a client command talks to (`sluice run`, `sluice tpch`,
//! `sluice bench`): one already running, or one embedded for the command.

use std::path::PathBuf;

use sluice_jobs::connection::ServerAddress;

use crate::config::{ServeArgs, DEFAULT_EXECUTORS};
use crate::error::{Result, ServerError};
use crate::serve::{self, RunningServer};

/// The server a client command talks to: one already running, or an
/// embedded one (2 executors, a scratch data directory) started for the
/// command and stopped after it.
pub struct TargetServer {
    /// Where to connect.
    pub address: ServerAddress,
    embedded: Option<RunningServer>,
    _scratch: Option<tempfile::TempDir>,
}

impl TargetServer {
    /// `address`, or with `embedded` a new embedded server configured by
    /// `config` (its `[storage.*]` sections, say) that `user` connects to.
    pub async fn start(
        address: &ServerAddress,
        embedded: bool,
        config: Option<PathBuf>,
    ) -> Result<Self> {
        if !embedded {
            return Ok(Self {
                address: address.clone(),
                embedded: None,
                _scratch: None,
            });
        }
        let scratch = tempfile::tempdir().map_err(|e| ServerError::io("creating a data dir", e))?;
        let config = ServeArgs {
            listen: Some("127.0.0.1:0".into()),
            http: Some("off".into()),
            data_dir: Some(scratch.path().to_path_buf()),
            executors: Some(DEFAULT_EXECUTORS),
            config,
            ..ServeArgs::default()
        }
        .resolve()?;
        let server = serve::start(&config).await?;
        Ok(Self {
            address: ServerAddress {
                host: server.address.ip().to_string(),
                port: server.address.port(),
                user: address.user.clone(),
                password: address.password.clone(),
            },
            embedded: Some(server),
            _scratch: Some(scratch),
        })
    }

    /// Stops the embedded server, if one was started.
    pub async fn stop(self) {
        if let Some(server) = self.embedded {
            server.stop().await;
        }
    }
}
