//! Object storage: which store a table URL reaches, with which credentials.
//!
//! The options live in the session configuration under `storage.<service>.<key>`
//! (`storage.s3.aws_endpoint`, `storage.gcs.google_service_account`, …), with
//! object_store's own key names. Ballista sends a session's configuration
//! with every job and task, so the scheduler (which lists files while planning)
//! and every executor (which reads and writes them) build the same stores the
//! frontend did; nobody configures executors one by one. Secret values are
//! masked wherever settings are shown (`information_schema.df_settings`,
//! `SHOW`, `Debug`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use url::Url;

use crate::file_caches::shared_cache_config;

/// What secret option values are shown as.
pub const MASK: &str = "********";

/// An object storage service with its own options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorageService {
    /// Amazon S3 and S3-compatible servers (MinIO, Ceph, …): `s3://bucket/path`.
    S3,
    /// Google Cloud Storage: `gs://bucket/path`.
    Gcs,
    /// Azure Blob Storage and ADLS Gen2: `az://container/path`, `abfss://…`.
    Azure,
}

impl StorageService {
    /// Every service, in display order.
    pub const ALL: [StorageService; 3] = [Self::S3, Self::Gcs, Self::Azure];

    /// The service's name in option keys and config file sections.
    pub fn name(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Gcs => "gcs",
            Self::Azure => "azure",
        }
    }

    /// The service named `name` (as in [`StorageService::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|service| service.name() == name)
    }

    /// The service that serves URLs with this scheme.
    pub fn for_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "s3" | "s3a" => Some(Self::S3),
            "gs" | "gcs" => Some(Self::Gcs),
            "az" | "azure" | "abfs" | "abfss" | "adl" => Some(Self::Azure),
            _ => None,
        }
    }

    /// Prefix of the standard environment variables holding this service's
    /// options (`AWS_ACCESS_KEY_ID` is option `aws_access_key_id`).
    fn env_prefix(self) -> &'static str {
        match self {
            Self::S3 => "AWS_",
            Self::Gcs => "GOOGLE_",
            Self::Azure => "AZURE_",
        }
    }

    /// object_store's canonical name for option `key` of this service; accepts
    /// every alias object_store does (`endpoint`, `aws_endpoint_url`, …).
    fn canonical_key(self, key: &str) -> Result<String> {
        let key = key.trim().to_ascii_lowercase().replace('-', "_");
        let canonical = match self {
            Self::S3 => AmazonS3ConfigKey::from_str(&key).map(|k| k.as_ref().to_string()),
            Self::Gcs => GoogleConfigKey::from_str(&key).map(|k| k.as_ref().to_string()),
            Self::Azure => AzureConfigKey::from_str(&key).map(|k| k.as_ref().to_string()),
        };
        canonical.map_err(|_| {
            DataFusionError::Configuration(format!(
                "unknown {} storage option '{key}' (expected one of object_store's {} \
                 configuration keys, e.g. {})",
                self.name(),
                self.name(),
                match self {
                    Self::S3 => "endpoint, region, access_key_id, secret_access_key, allow_http",
                    Self::Gcs => "service_account, service_account_key, bucket",
                    Self::Azure => "account_name, access_key, endpoint, use_emulator",
                }
            ))
        })
    }
}

/// Whether the option named `key` (canonical or not) holds a secret.
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("access_key_id") {
        return false;
    }
    [
        "secret",
        "token",
        "password",
        "sas",
        "access_key",
        "account_key",
        "master_key",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// The value of setting `name` as it may be shown to a user.
pub fn displayed_value<'a>(name: &str, value: &'a str) -> &'a str {
    if name.starts_with(StorageOptions::PREFIX) && is_secret_option(name) {
        MASK
    } else {
        value
    }
}

/// Object storage options of one session, per service, keyed by object_store's
/// canonical option names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions {
    values: BTreeMap<(StorageService, String), String>,
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for ((service, key), value) in &self.values {
            let name = format!("{}.{key}", service.name());
            let shown = if is_secret_option(key) { MASK } else { value };
            map.entry(&name, &shown);
        }
        map.finish()
    }
}

impl StorageOptions {
    /// Sets option `key` of `service`. `path_style = true|false` is accepted for
    /// S3 as the inverse of object_store's `virtual_hosted_style_request`.
    pub fn set_option(&mut self, service: StorageService, key: &str, value: &str) -> Result<()> {
        let normalized = key.trim().to_ascii_lowercase().replace('-', "_");
        if service == StorageService::S3 && normalized == "path_style" {
            let path_style: bool = value.trim().parse().map_err(|_| {
                DataFusionError::Configuration(format!(
                    "s3 storage option path_style must be true or false, not '{value}'"
                ))
            })?;
            return self.set_option(
                service,
                "virtual_hosted_style_request",
                &(!path_style).to_string(),
            );
        }
        let canonical = service.canonical_key(&normalized)?;
        self.values.insert((service, canonical), value.to_string());
        Ok(())
    }

    /// Adds the options found in the standard environment variables
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`), overriding options already set.
    /// Variables that are not object_store options are ignored.
    pub fn merge_env(&mut self) {
        self.merge_vars(std::env::vars());
    }

    fn merge_vars(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            for service in StorageService::ALL {
                if name.starts_with(service.env_prefix()) {
                    // Not every AWS_* variable is an option (AWS_PROFILE, …).
                    let _ = self.set_option(service, &name, &value);
                }
            }
        }
    }

    /// The value of option `key` of `service`, if set.
    pub fn get(&self, service: StorageService, key: &str) -> Option<&str> {
        let canonical = service.canonical_key(key).ok()?;
        self.values.get(&(service, canonical)).map(String::as_str)
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn options_of(&self, service: StorageService) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .filter(move |((s, _), _)| *s == service)
            .map(|((_, key), value)| (key.as_str(), value.as_str()))
    }

    /// Builds a store serving `url` (any object storage URL; not `file://`),
    /// or says why it cannot.
    pub fn build_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let Some(service) = StorageService::for_scheme(url.scheme()) else {
            return Err(DataFusionError::Configuration(format!(
                "unsupported object store URL '{url}': Sluice reads file://, s3://, gs:// \
                 and az:// (abfss://) locations"
            )));
        };
        let built: object_store::Result<Arc<dyn ObjectStore>> = match service {
            StorageService::S3 => {
                let mut builder = AmazonS3Builder::new().with_url(url.as_str());
                for (key, value) in self.options_of(service) {
                    let key = AmazonS3ConfigKey::from_str(key).expect("canonical key");
                    builder = builder.with_config(key, value);
                }
                builder.build().map(|store| Arc::new(store) as _)
            }
            StorageService::Gcs => {
                let mut builder = GoogleCloudStorageBuilder::new().with_url(url.as_str());
                for (key, value) in self.options_of(service) {
                    let key = GoogleConfigKey::from_str(key).expect("canonical key");
                    builder = builder.with_config(key, value);
                }
                builder.build().map(|store| Arc::new(store) as _)
            }
            StorageService::Azure => {
                let mut builder = MicrosoftAzureBuilder::new().with_url(url.as_str());
                for (key, value) in self.options_of(service) {
                    let key = AzureConfigKey::from_str(key).expect("canonical key");
                    builder = builder.with_config(key, value);
                }
                builder.build().map(|store| Arc::new(store) as _)
            }
        };
        built.map_err(|e| {
            DataFusionError::Configuration(format!(
                "cannot reach {}://{}: {e}",
                url.scheme(),
                url.host_str().unwrap_or_default()
            ))
        })
    }
}

impl ExtensionOptions for StorageOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let (service, option) = key.split_once('.').unwrap_or((key, ""));
        let Some(service) = StorageService::from_name(service) else {
            return Err(DataFusionError::Configuration(format!(
                "unknown storage service in 'storage.{key}' (expected storage.s3.*, \
                 storage.gcs.* or storage.azure.*)"
            )));
        };
        self.set_option(service, option, value)
    }

    /// Every option that is set, with its real value: Ballista ships these
    /// entries to the scheduler and executors. Showing them to users goes
    /// through [`displayed_value`].
    fn entries(&self) -> Vec<ConfigEntry> {
        self.values
            .iter()
            .map(|((service, key), value)| ConfigEntry {
                key: format!("{}.{}.{key}", Self::PREFIX, service.name()),
                value: Some(value.clone()),
                description: "object storage option (object_store configuration key)",
            })
            .collect()
    }
}

impl ConfigExtension for StorageOptions {
    const PREFIX: &'static str = "storage";
}

/// The stores of one runtime: local files, plus one store per bucket or
/// container of the cloud services, built on first use from the session's
/// [`StorageOptions`].
#[derive(Debug)]
pub struct StorageRegistry {
    options: StorageOptions,
    local: Arc<LocalFileSystem>,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl StorageRegistry {
    /// A registry building stores with `options`.
    pub fn new(options: StorageOptions) -> Self {
        Self {
            options,
            local: Arc::new(LocalFileSystem::new()),
            stores: RwLock::default(),
        }
    }
}

/// `scheme://authority` of a URL: one store serves all its paths.
fn store_key(url: &Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

impl ObjectStoreRegistry for StorageRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores.insert(store_key(url), store)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = store_key(url);
        if let Some(store) = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(store));
        }
        if matches!(url.scheme(), "" | "file") {
            return Ok(self.local.clone());
        }
        let store = self.options.build_store(url)?;
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(stores.entry(key).or_insert(store)))
    }
}

/// A runtime whose object stores follow `config`'s [`StorageOptions`], with
/// spill files under `temp_dir` when given.
pub fn runtime_env(config: &SessionConfig, temp_dir: Option<&Path>) -> Result<Arc<RuntimeEnv>> {
    let options = config
        .options()
        .extensions
        .get::<StorageOptions>()
        .cloned()
        .unwrap_or_default();
    runtime_env_with(options, temp_dir, None)
}

/// A runtime whose object stores follow `options`, with spill files under
/// `temp_dir` when given, a memory pool of `memory_limit` bytes when given
/// (unbounded otherwise), sharing the process's Parquet metadata and file
/// statistics caches ([`crate::file_caches`]).
pub fn runtime_env_with(
    options: StorageOptions,
    temp_dir: Option<&Path>,
    memory_limit: Option<usize>,
) -> Result<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(StorageRegistry::new(options)))
        .with_cache_manager(shared_cache_config());
    if let Some(dir) = temp_dir {
        builder = builder.with_temp_file_path(dir);
    }
    if let Some(bytes) = memory_limit {
        builder = builder.with_memory_limit(bytes, 1.0);
    }
    builder.build_arc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_take_aliases_env_and_path_style() {
        let mut options = StorageOptions::default();
        options
            .set_option(StorageService::S3, "endpoint", "http://127.0.0.1:9000")
            .unwrap();
        options
            .set_option(StorageService::S3, "path-style", "true")
            .unwrap();
        options.merge_vars([
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s3cr3t".to_string()),
            ("AWS_PROFILE_NOT_AN_OPTION".to_string(), "x".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ]);
        assert_eq!(
            options.get(StorageService::S3, "aws_endpoint"),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            options.get(StorageService::S3, "virtual_hosted_style_request"),
            Some("false")
        );
        assert_eq!(
            options.get(StorageService::S3, "secret_access_key"),
            Some("s3cr3t")
        );
        assert!(!format!("{options:?}").contains("s3cr3t"));
        assert!(options
            .set_option(StorageService::S3, "no_such_option", "1")
            .is_err());
    }

    #[test]
    fn entries_round_trip_through_set() {
        let mut options = StorageOptions::default();
        options
            .set_option(StorageService::Azure, "account_name", "acct")
            .unwrap();
        options
            .set_option(StorageService::S3, "region", "eu-west-1")
            .unwrap();
        let mut copy = StorageOptions::default();
        for entry in options.entries() {
            let key = entry.key.strip_prefix("storage.").unwrap();
            copy.set(key, entry.value.as_deref().unwrap()).unwrap();
        }
        assert_eq!(copy, options);
    }

    #[test]
    fn secrets_are_recognised() {
        assert!(is_secret_option("storage.s3.aws_secret_access_key"));
        assert!(is_secret_option("storage.s3.aws_session_token"));
        assert!(is_secret_option("storage.azure.azure_storage_account_key"));
        assert!(!is_secret_option("storage.s3.aws_access_key_id"));
        assert!(!is_secret_option("storage.s3.aws_endpoint"));
        assert_eq!(
            displayed_value("storage.s3.aws_secret_access_key", "x"),
            MASK
        );
        assert_eq!(
            displayed_value("datafusion.execution.batch_size", "8192"),
            "8192"
        );
    }
}
