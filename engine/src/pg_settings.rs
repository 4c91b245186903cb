//! PostgreSQL's run-time parameters (GUCs) as clients expect to find them.
//!
//! Drivers and BI tools read and write a handful of PostgreSQL settings —
//! `server_version`, `search_path`, `DateStyle`, `statement_timeout`, … — with
//! `SHOW`, `SET`, `current_setting()` and `set_config()`, and receive some of
//! them as `ParameterStatus` messages. They live in the session configuration
//! under the `pg.` prefix (so `SHOW ALL` lists them, functions can read them at
//! execution, and each connection has its own), keyed by the lower-case name.
//! Only the parameters declared in [`PARAMETERS`] exist; anything else is
//! `unrecognized configuration parameter`, as in PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::sqlstate::SqlState;
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};

/// The PostgreSQL major.minor Sluice presents itself as.
pub const PG_VERSION: &str = "16.6";
/// [`PG_VERSION`] as `server_version_num`.
pub const PG_VERSION_NUM: &str = "160006";

/// How a client may change a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changeable {
    /// `SET` changes it for the session.
    Session,
    /// Fixed for the server (`parameter "…" cannot be changed`).
    Never,
}

/// One PostgreSQL parameter.
#[derive(Debug)]
pub struct Parameter {
    /// The name as PostgreSQL spells it (`DateStyle`); lookups ignore case.
    pub name: &'static str,
    /// The value a new session starts with.
    pub default: &'static str,
    /// Whether clients may change it.
    pub changeable: Changeable,
    /// Sent to the client in a `ParameterStatus` message at startup and
    /// whenever it changes (PostgreSQL's `GUC_REPORT`).
    pub reported: bool,
    /// `pg_settings.short_desc`.
    pub description: &'static str,
}

const fn session(name: &'static str, default: &'static str, reported: bool) -> Parameter {
    Parameter {
        name,
        default,
        changeable: Changeable::Session,
        reported,
        description: "PostgreSQL session parameter",
    }
}

const fn fixed(name: &'static str, default: &'static str, reported: bool) -> Parameter {
    Parameter {
        name,
        default,
        changeable: Changeable::Never,
        reported,
        description: "PostgreSQL server parameter (fixed)",
    }
}

/// Every PostgreSQL parameter Sluice knows.
pub const PARAMETERS: &[Parameter] = &[
    session("application_name", "", true),
    fixed("block_size", "8192", false),
    session("bytea_output", "hex", false),
    session("client_encoding", "UTF8", true),
    session("client_min_messages", "notice", false),
    session("DateStyle", "ISO, MDY", true),
    session("default_transaction_isolation", "read committed", false),
    session("default_transaction_read_only", "off", true),
    session("extra_float_digits", "1", false),
    session("idle_in_transaction_session_timeout", "0", false),
    fixed("in_hot_standby", "off", true),
    fixed("integer_datetimes", "on", true),
    session("IntervalStyle", "postgres", true),
    fixed("is_superuser", "on", true),
    session("jit", "off", false),
    fixed("lc_collate", "C", false),
    fixed("lc_ctype", "C", false),
    session("lc_messages", "C", false),
    session("lc_monetary", "C", false),
    session("lc_numeric", "C", false),
    session("lc_time", "C", false),
    session("lock_timeout", "0", false),
    fixed("max_connections", "100", false),
    fixed("max_identifier_length", "63", false),
    fixed("max_index_keys", "32", false),
    session("row_security", "on", false),
    session("search_path", "\"$user\", public", false),
    fixed("server_encoding", "UTF8", true),
    fixed("server_version", PG_VERSION, true),
    fixed("server_version_num", PG_VERSION_NUM, false),
    session("standard_conforming_strings", "on", true),
    session("statement_timeout", "0", false),
    session("synchronous_commit", "on", false),
    session("TimeZone", "UTC", true),
    session("transaction_isolation", "read committed", false),
    session("transaction_read_only", "off", false),
    session("work_mem", "4MB", false),
];

/// The parameter called `name` (any case).
pub fn parameter(name: &str) -> Option<&'static Parameter> {
    PARAMETERS
        .iter()
        .find(|parameter| parameter.name.eq_ignore_ascii_case(name))
}

/// Why a parameter could not be set; each maps to a PostgreSQL SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// No such parameter (42704).
    #[error("unrecognized configuration parameter \"{0}\"")]
    Unrecognized(String),
    /// The parameter is fixed (55P02).
    #[error("parameter \"{0}\" cannot be changed")]
    Fixed(String),
    /// The value does not suit the parameter (22023).
    #[error("invalid value for parameter \"{name}\": \"{value}\"{hint}")]
    InvalidValue {
        /// The parameter.
        name: String,
        /// The value given.
        value: String,
        /// Extra explanation, starting with a separator.
        hint: String,
    },
}

impl SettingError {
    /// The PostgreSQL SQLSTATE for this error.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            Self::Unrecognized(_) => SqlState::UNDEFINED_OBJECT,
            Self::Fixed(_) => SqlState::CANT_CHANGE_RUNTIME_PARAM,
            Self::InvalidValue { .. } => SqlState::INVALID_PARAMETER_VALUE,
        }
    }
}

/// One session's PostgreSQL parameters (those changed from their default).
#[derive(Debug, Clone, Default)]
pub struct PgSettings {
    changed: BTreeMap<&'static str, String>,
    /// Defaults the server was configured with (`--statement-timeout`), which
    /// `RESET` returns to instead of the built-in ones.
    server_defaults: BTreeMap<&'static str, String>,
}

impl PgSettings {
    /// The current value of `name`, or `None` for an unknown parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        let parameter = parameter(name)?;
        Some(
            self.changed
                .get(parameter.name)
                .or_else(|| self.server_defaults.get(parameter.name))
                .map(String::as_str)
                .unwrap_or(parameter.default),
        )
    }

    /// Makes `value` the default of `name` for this session and every copy
    /// of it, as a server setting does: `RESET` comes back to it.
    pub fn set_server_default(&mut self, name: &str, value: &str) -> Result<(), SettingError> {
        let parameter = self.settable(name)?;
        let value = normalise(parameter, value)?;
        self.server_defaults.insert(parameter.name, value);
        Ok(())
    }

    /// Sets `name` as a client's `SET` does; returns the parameter (with its
    /// canonical name) so callers can report it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<&'static Parameter, SettingError> {
        let parameter = self.settable(name)?;
        let value = normalise(parameter, value)?;
        self.changed.insert(parameter.name, value);
        Ok(parameter)
    }

    /// Applies a value the client sent in its startup packet. Fixed and unknown
    /// parameters are ignored there (PostgreSQL rejects only some of them).
    pub fn apply_startup(&mut self, name: &str, value: &str) {
        if let Ok(parameter) = self.settable(name) {
            if let Ok(value) = normalise(parameter, value) {
                self.changed.insert(parameter.name, value);
            }
        }
    }

    /// Puts `name` back to its default (`RESET name`, `SET name TO DEFAULT`).
    pub fn reset(&mut self, name: &str) -> Result<&'static Parameter, SettingError> {
        let parameter = self.settable(name)?;
        self.changed.remove(parameter.name);
        Ok(parameter)
    }

    /// Puts every parameter back to its default (`RESET ALL`, `DISCARD ALL`).
    pub fn reset_all(&mut self) {
        self.changed.clear();
    }

    /// `statement_timeout` as a duration; `None` when it is 0 (no limit).
    pub fn statement_timeout(&self) -> Option<Duration> {
        let millis = parse_milliseconds(self.get("statement_timeout").unwrap_or("0"))?;
        (millis > 0).then(|| Duration::from_millis(millis))
    }

    /// The parameters reported to clients, with their current values.
    pub fn reported(&self) -> impl Iterator<Item = (&'static str, &str)> {
        PARAMETERS
            .iter()
            .filter(|parameter| parameter.reported)
            .map(|parameter| (parameter.name, self.get(parameter.name).unwrap_or_default()))
    }

    fn settable(&self, name: &str) -> Result<&'static Parameter, SettingError> {
        let parameter = parameter(name).ok_or_else(|| SettingError::Unrecognized(name.into()))?;
        match parameter.changeable {
            Changeable::Session => Ok(parameter),
            Changeable::Never => Err(SettingError::Fixed(parameter.name.into())),
        }
    }
}

/// `value` as stored for `parameter`: as given, once timeouts are checked to
/// be durations.
fn normalise(parameter: &Parameter, value: &str) -> Result<String, SettingError> {
    if !parameter.name.ends_with("_timeout") {
        return Ok(value.to_string());
    }
    parse_milliseconds(value)
        .map(|_| value.trim().to_string())
        .ok_or_else(|| SettingError::InvalidValue {
            name: parameter.name.into(),
            value: value.into(),
            hint: ": valid units are \"ms\", \"s\", \"min\", \"h\" and \"d\"".into(),
        })
}

/// A PostgreSQL time value (`2s`, `1500`, `1.5 min`) in milliseconds; a bare
/// number is milliseconds.
pub fn parse_milliseconds(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    Some((number * scale).round() as u64)
}

impl ExtensionOptions for PgSettings {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    /// Also receives every entry when a job's settings are rebuilt on the
    /// scheduler and executors, fixed parameters included: those are accepted
    /// when unchanged.
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match PgSettings::set(self, key, value) {
            Err(SettingError::Fixed(_)) if self.get(key) == Some(value) => Ok(()),
            result => result
                .map(|_| ())
                .map_err(|e| DataFusionError::Configuration(e.to_string())),
        }
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        PARAMETERS
            .iter()
            .map(|parameter| ConfigEntry {
                key: format!("{}.{}", Self::PREFIX, parameter.name.to_ascii_lowercase()),
                value: self.get(parameter.name).map(str::to_string),
                description: parameter.description,
            })
            .collect()
    }
}

impl ConfigExtension for PgSettings {
    const PREFIX: &'static str = "pg";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_postgres_units() {
        assert_eq!(parse_milliseconds("2s"), Some(2000));
        assert_eq!(parse_milliseconds("250"), Some(250));
        assert_eq!(parse_milliseconds("1.5 min"), Some(90_000));
        assert_eq!(parse_milliseconds("soon"), None);
        let mut settings = PgSettings::default();
        settings.set("STATEMENT_TIMEOUT", "2s").unwrap();
        assert_eq!(settings.get("statement_timeout"), Some("2s"));
        assert_eq!(settings.statement_timeout(), Some(Duration::from_secs(2)));
        settings.set("statement_timeout", "0").unwrap();
        assert_eq!(settings.statement_timeout(), None);
        settings
            .set_server_default("statement_timeout", "5s")
            .unwrap();
        assert_eq!(settings.statement_timeout(), None);
        settings.reset("statement_timeout").unwrap();
        assert_eq!(settings.statement_timeout(), Some(Duration::from_secs(5)));
        settings.set("statement_timeout", "1s").unwrap();
        settings.reset_all();
        assert_eq!(settings.statement_timeout(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn fixed_and_unknown_parameters_are_refused() {
        let mut settings = PgSettings::default();
        assert_eq!(
            settings.set("server_version", "1").unwrap_err().sqlstate(),
            SqlState::CANT_CHANGE_RUNTIME_PARAM
        );
        assert_eq!(
            settings.set("no_such", "1").unwrap_err().sqlstate(),
            SqlState::UNDEFINED_OBJECT
        );
        settings.set("datestyle", "ISO, DMY").unwrap();
        assert_eq!(settings.get("DateStyle"), Some("ISO, DMY"));
        settings.reset_all();
        assert_eq!(settings.get("DateStyle"), Some("ISO, MDY"));
    }
}
