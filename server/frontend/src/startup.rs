//! Connection startup: the database check, TLS and password checks (SCRAM,
//! with its state in this connection's handler), the session's PostgreSQL
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
use datafusion_postgres::pgwire::api::PgWireConnectionState;
use datafusion_postgres::pgwire::api::{
    ClientInfo, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, METADATA_DATABASE,
    METADATA_USER,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::{Sink, SinkExt};
use sluice_engine::sqlstate::SqlState;

use super::interrupt::{CancelRegistry, ConnectionSignal};
use super::settings::{formatting_key, with_settings};
use super::slots::{ConnectionSlot, Refusal, RESERVED_FOR_ADMINS};
use crate::auth::access::{role_of, ROLE_KEY};
use crate::auth::scram::{self, Exchange, ScramError, Verifier};
use crate::auth::{Principal, Role, StoredPassword, User, Users};
use sluice_engine::pg_settings::PARAMETERS;

/// The database name clients must connect to.
pub const DATABASE: &str = "sluice";

static BACKEND_KEYS: LazyLock<RandomPidSecretKeyGenerator> =
    LazyLock::new(RandomPidSecretKeyGenerator::default);

/// Startup parameters that are connection details, not PostgreSQL settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication", ROLE_KEY];

/// Who the server lets in.
#[derive(Debug, Default)]
pub struct LoginPolicy {
    /// The users who may log in; none trusts every client.
    pub users: Users,
    /// Whether clients must use TLS.
    pub tls_required: bool,
    /// Whether users with md5 passwords may log in (with md5).
    pub allow_md5: bool,
}

/// Where one connection's login is.
#[derive(Debug, Default)]
enum Login {
    /// Waiting for the client's first SCRAM message.
    #[default]
    Started,
    /// The server's first message is sent.
    Challenged(Box<Exchange>),
    /// The md5 salt is sent; the password message comes next.
    Md5Challenged([u8; 4]),
    /// Logged in, or failed.
    Over,
}

/// One connection's startup handler: lets in the users of the login policy
/// on the `sluice` database.
pub struct Startup {
    /// The connection's session, whose parameters the startup packet sets.
    pub session: Arc<SessionContext>,
    /// Where cancel requests find this connection.
    pub cancels: Arc<CancelRegistry>,
    /// This connection's interrupt line.
    pub signal: Arc<ConnectionSignal>,
    /// Who may log in.
    pub policy: Arc<LoginPolicy>,
    /// This connection's SCRAM exchange (one handler per connection, so
    /// concurrent logins never share it).
    login: tokio::sync::Mutex<Login>,
    /// This connection's place among the server's connections.
    slot: Arc<ConnectionSlot>,
}

/// A `FATAL` error with `code`: the connection ends.
fn fatal(code: SqlState, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.to_string(),
        message,
    )))
}

/// A fresh random md5 salt.
fn md5_salt() -> PgWireResult<[u8; 4]> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| {
            fatal(
                SqlState::INTERNAL_ERROR,
                "no randomness for the md5 salt".into(),
            )
        })?;
    Ok(salt)
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
        let startup = match message {
            PgWireFrontendMessage::Startup(ref startup) => startup,
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                return self.on_password(client, message).await;
            }
            _ => return Ok(()),
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        // The role is the server's to say, never the startup packet's.
        client.metadata_mut().remove(ROLE_KEY);
        if self.policy.tls_required && !client.is_secure() {
            return Err(fatal(
                SqlState::INVALID_AUTHORIZATION,
                "this server accepts TLS connections only (use sslmode=require)".into(),
            ));
        }
        if self.policy.users.is_empty() {
            // Every client is trusted, with every right.
            client
                .metadata_mut()
                .insert(ROLE_KEY.to_string(), Role::Admin.name().to_string());
            return self.admit(client).await;
        }
        client.set_state(PgWireConnectionState::AuthenticationInProgress);
        let user = client.metadata().get(METADATA_USER).cloned();
        let stored = user.and_then(|user| self.policy.users.get(&user).map(|u| &u.password));
        let request = match stored {
            // As PostgreSQL does: md5 for a user whose password only md5 can
            // check, SCRAM for everyone else (and for unknown users).
            Some(StoredPassword::Md5(_)) if self.policy.allow_md5 => {
                let salt = md5_salt()?;
                *self.login.lock().await = Login::Md5Challenged(salt);
                Authentication::MD5Password(salt.to_vec())
            }
            _ => Authentication::SASL(vec![scram::MECHANISM.to_string()]),
        };
        client
            .send(PgWireBackendMessage::Authentication(request))
            .await?;
        Ok(())
    }
}

impl Startup {
    /// The startup handler of one new connection.
    pub fn new(
        session: Arc<SessionContext>,
        cancels: Arc<CancelRegistry>,
        signal: Arc<ConnectionSignal>,
        policy: Arc<LoginPolicy>,
        slot: Arc<ConnectionSlot>,
    ) -> Self {
        Self {
            session,
            cancels,
            signal,
            policy,
            login: tokio::sync::Mutex::default(),
            slot,
        }
    }

    /// The client's SCRAM messages: the first gets the server's challenge,
    /// the final one is checked and, when right, lets the client in.
    async fn on_password<C>(
        &self,
        client: &mut C,
        message: PasswordMessageFamily,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let violation = |what: String| fatal(SqlState::PROTOCOL_VIOLATION, what);
        let mut login = self.login.lock().await;
        match std::mem::replace(&mut *login, Login::Over) {
            Login::Started => {
                let initial = message
                    .into_sasl_initial_response()
                    .map_err(|e| violation(format!("expected a SASL initial response: {e}")))?;
                if initial.auth_method != scram::MECHANISM {
                    return Err(fatal(
                        SqlState::INVALID_AUTHORIZATION,
                        format!(
                            "authentication method {} is not offered; use {}",
                            initial.auth_method,
                            scram::MECHANISM
                        ),
                    ));
                }
                // A user without a SCRAM verifier fails like an unknown one.
                let verifier = match self.scram_user(&user) {
                    Some(known) => match &known.password {
                        StoredPassword::Scram(verifier) => verifier.clone(),
                        StoredPassword::Md5(_) => Verifier::unknown_user(),
                    },
                    None => Verifier::unknown_user(),
                };
                let data = initial.data.unwrap_or_default();
                let (exchange, server_first) =
                    Exchange::start(verifier, &data).map_err(|e| violation(e.to_string()))?;
                *login = Login::Challenged(Box::new(exchange));
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLContinue(server_first.into_bytes().into()),
                    ))
                    .await?;
                Ok(())
            }
            Login::Challenged(exchange) => {
                let response = message
                    .into_sasl_response()
                    .map_err(|e| violation(format!("expected a SASL response: {e}")))?;
                let known = self.scram_user(&user);
                let server_final = match (exchange.finish(&response.data), known) {
                    (Ok(server_final), Some(_)) => server_final,
                    (Err(ScramError::Malformed(what)), _) => {
                        return Err(violation(format!("malformed SCRAM message: {what}")))
                    }
                    _ => {
                        tracing::info!("failed login of user {user:?}");
                        return Err(fatal(
                            SqlState::INVALID_PASSWORD,
                            format!("password authentication failed for user \"{user}\""),
                        ));
                    }
                };
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLFinal(server_final.into_bytes().into()),
                    ))
                    .await?;
                if let Some(known) = known {
                    client
                        .metadata_mut()
                        .insert(ROLE_KEY.to_string(), known.role.name().to_string());
                }
                self.admit(client).await
            }
            Login::Md5Challenged(salt) => {
                let answer = message
                    .into_password()
                    .map_err(|e| violation(format!("expected a password message: {e}")))?;
                let known = self.policy.users.get(&user).filter(|known| {
                    matches!(&known.password, StoredPassword::Md5(md5)
                        if md5.accepts(salt, answer.password.as_bytes()))
                });
                let Some(known) = known else {
                    tracing::info!("failed md5 login of user {user:?}");
                    return Err(fatal(
                        SqlState::INVALID_PASSWORD,
                        format!("password authentication failed for user \"{user}\""),
                    ));
                };
                client
                    .metadata_mut()
                    .insert(ROLE_KEY.to_string(), known.role.name().to_string());
                self.admit(client).await
            }
            Login::Over => Err(violation("unexpected password message".into())),
        }
    }

    /// User `name` if SCRAM can log them in (their password is stored as a
    /// SCRAM verifier).
    fn scram_user(&self, name: &str) -> Option<&User> {
        self.policy
            .users
            .get(name)
            .filter(|user| matches!(user.password, StoredPassword::Scram(_)))
    }

    /// Lets the client in: its backend key, session settings and the
    /// parameters it is told.
    async fn admit<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Told only to clients that logged in, as PostgreSQL does.
        let database = client.metadata().get(METADATA_DATABASE).cloned();
        if let Some(other) = database.filter(|name| name != DATABASE) {
            return Err(fatal(
                SqlState::INVALID_CATALOG_NAME,
                format!(
                    "database \"{other}\" does not exist (this server has database \"{DATABASE}\")"
                ),
            ));
        }
        let role = role_of(client);
        self.slot.log_in(role == Role::Admin).map_err(|refusal| {
            fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                match refusal {
                    Refusal::Full => "sorry, too many clients already (--max-connections)".into(),
                    Refusal::ReservedForAdmins => format!(
                        "remaining connection slots are reserved for users with role admin \
                         ({RESERVED_FOR_ADMINS} of --max-connections)"
                    ),
                },
            )
        })?;
        let principal = Principal {
            user: client
                .metadata()
                .get(METADATA_USER)
                .cloned()
                .unwrap_or_default(),
            role,
        };
        sluice_engine::pg_functions::register_session_user(&self.session, &principal.user);
        self.session
            .state_ref()
            .write()
            .config_mut()
            .set_extension(Arc::new(principal));
        let (pid, secret) = BACKEND_KEYS.generate(client);
        self.cancels
            .register(pid, secret.to_bytes().to_vec(), &self.signal);
        client.set_pid_and_secret_key(pid, secret);
        let reported = self.apply_settings(client);
        finish_authentication(client, &reported).await
    }
}
