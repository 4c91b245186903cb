//! The file a `COPY table FROM 'location'` reads: a local path or an
//! object-store URL, inside the location sandbox and never the server's own
//! state ([`crate::sandbox`]).
//!
//! A local file is checked by name, opened, then checked again by the path
//! the opened descriptor resolves to (`/proc/self/fd/N`): a symlink swapped
//! in between the check and the open leads nowhere the sandbox refuses.

use std::pin::Pin;

use bytes::Bytes;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use tokio::io::AsyncReadExt;

use crate::sandbox::LocationSandbox;
use crate::sqlstate::{pg_error, PgError, SqlState};

/// Bytes read from a local file at a time.
const READ_BYTES: usize = 1024 * 1024;

/// The file's contents, piece by piece.
pub type Contents = Pin<Box<dyn Stream<Item = Result<Bytes, PgError>> + Send>>;

/// Opens `location` for reading, checked by `sandbox` (none: a session
/// outside a server).
pub async fn open(
    location: &str,
    sandbox: Option<&LocationSandbox>,
    runtime: &RuntimeEnv,
) -> Result<Contents, PgError> {
    let check = |location: &str| match sandbox {
        Some(sandbox) => sandbox.check(location).map_err(|e| pg_error(&e)),
        None => Ok(()),
    };
    check(location)?;
    let url = ListingTableUrl::parse(location).map_err(|e| pg_error(&e))?;
    if url.scheme() != "file" {
        return open_object(location, &url, runtime).await;
    }
    let path = url::Url::parse(url.as_str())
        .ok()
        .and_then(|url| url.to_file_path().ok())
        .ok_or_else(|| {
            PgError::new(
                SqlState::UNDEFINED_FILE,
                format!("\"{location}\" is not a file path"),
            )
        })?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| unreadable(location, &e))?;
    let metadata = file
        .metadata()
        .await
        .map_err(|e| unreadable(location, &e))?;
    if metadata.is_dir() {
        return Err(PgError::new(
            SqlState::UNDEFINED_FILE,
            format!("\"{location}\" is a directory"),
        ));
    }
    let opened = opened_path(&file).map_err(|e| unreadable(location, &e))?;
    check(&opened)?;
    Ok(Box::pin(futures::stream::try_unfold(
        (file, location.to_string()),
        |(mut file, location)| async move {
            let mut buffer = vec![0; READ_BYTES];
            let read = file
                .read(&mut buffer)
                .await
                .map_err(|e| unreadable(&location, &e))?;
            if read == 0 {
                return Ok(None);
            }
            buffer.truncate(read);
            Ok(Some((Bytes::from(buffer), (file, location))))
        },
    )))
}

/// The path the open `file` resolves to.
fn opened_path(file: &tokio::fs::File) -> std::io::Result<String> {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(std::fs::read_link(link)?.display().to_string())
}

/// An object in an object store.
async fn open_object(
    location: &str,
    url: &ListingTableUrl,
    runtime: &RuntimeEnv,
) -> Result<Contents, PgError> {
    let store = runtime
        .object_store(url.object_store())
        .map_err(|e| pg_error(&e))?;
    let object = store
        .get(url.prefix())
        .await
        .map_err(|e| object_error(location, e))?;
    let location = location.to_string();
    Ok(Box::pin(
        object
            .into_stream()
            .map_err(move |e| object_error(&location, e))
            .boxed(),
    ))
}

fn unreadable(location: &str, error: &std::io::Error) -> PgError {
    let code = match error.kind() {
        std::io::ErrorKind::NotFound => SqlState::UNDEFINED_FILE,
        std::io::ErrorKind::PermissionDenied => SqlState::INSUFFICIENT_PRIVILEGE,
        _ => SqlState::IO_ERROR,
    };
    PgError::new(
        code,
        format!("could not open file \"{location}\" for reading: {error}"),
    )
}

fn object_error(location: &str, error: object_store::Error) -> PgError {
    let code = match error {
        object_store::Error::NotFound { .. } => SqlState::UNDEFINED_FILE,
        _ => SqlState::IO_ERROR,
    };
    let error = DataFusionError::ObjectStore(Box::new(error));
    PgError::new(code, format!("could not read \"{location}\": {error}"))
}
