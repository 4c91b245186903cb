//! Connection startup: the database check, the session's PostgreSQL
//! parameters from the startup packet, the `ParameterStatus` values clients
//! read (`server_version`, …), and the backend key cancel requests carry.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    ServerParameterProvider, StartupHandler,
};
use datafusion_postgres::pgwire::api::{
    ClientInfo, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, METADATA_DATABASE,
    METADATA_USER,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;

use super::interrupt::{CancelRegistry, ConnectionSignal};
use super::settings::{formatting_key, with_settings};
use sluice_engine::pg_settings::PARAMETERS;

/// The database name clients must connect to.
pub const DATABASE: &str = "sluice";

static BACKEND_KEYS: LazyLock<RandomPidSecretKeyGenerator> =
    LazyLock::new(RandomPidSecretKeyGenerator::default);

/// Startup parameters that are connection details, not PostgreSQL settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// Lets in any user on the `sluice` database (no users are configured yet).
pub struct Startup {
    /// The connection's session, whose parameters the startup packet sets.
    pub session: Arc<SessionContext>,
    /// Where cancel requests find this connection.
    pub cancels: Arc<CancelRegistry>,
    /// This connection's interrupt line.
    pub signal: Arc<ConnectionSignal>,
}

/// The parameters reported at startup, from the session's settings.
struct ReportedParameters {
    values: HashMap<String, String>,
}

impl ServerParameterProvider for ReportedParameters {
    fn server_parameters<C: ClientInfo>(&self, _client: &C) -> Option<HashMap<String, String>> {
        Some(self.values.clone())
    }
}

impl Startup {
    /// Applies the startup packet's settings to the session and returns the
    /// parameters to report.
    fn apply_settings<C: ClientInfo>(&self, client: &mut C) -> ReportedParameters {
        let sent: Vec<(String, String)> = client
            .metadata()
            .iter()
            .filter(|(name, _)| !NOT_SETTINGS.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let (mut values, formatting) = with_settings(&self.session, |settings| {
            for (name, value) in &sent {
                settings.apply_startup(name, value);
            }
            let reported: HashMap<String, String> = settings
                .reported()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect();
            let formatting: Vec<(&str, String)> = PARAMETERS
                .iter()
                .filter_map(|p| Some((formatting_key(p)?, settings.get(p.name)?.to_string())))
                .collect();
            (reported, formatting)
        });
        // Value formatting (arrow-pg) reads these keys from the metadata.
        for (key, value) in formatting {
            client.metadata_mut().insert(key.into(), value);
        }
        if let Some(user) = client.metadata().get(METADATA_USER) {
            values.insert("session_authorization".into(), user.clone());
        }
        ReportedParameters { values }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(ref startup) = message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let database = client.metadata().get(METADATA_DATABASE).cloned();
        if let Some(other) = database.filter(|name| name != DATABASE) {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "3D000".into(),
                format!(
                    "database \"{other}\" does not exist (this server has database \"{DATABASE}\")"
                ),
            ))));
        }
        let (pid, secret) = BACKEND_KEYS.generate(client);
        self.cancels
            .register(pid, secret.to_bytes().to_vec(), &self.signal);
        client.set_pid_and_secret_key(pid, secret);
        let reported = self.apply_settings(client);
        finish_authentication(client, &reported).await
    }
}
