//! `sluice run FILE`: a SQL script against a server, statement by
//! statement, with `${NAME}` variables; see [`sluice_jobs::script`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use sluice_jobs::connection::{connect_with_notices, ServerAddress};
use sluice_jobs::script::{plan_statements, prepare, run_statements};

use crate::client::TargetServer;
use crate::error::{Result, ServerError};

/// Flags of `sluice run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The SQL script: statements separated by semicolons.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// A value for `${NAME}` in the script, `NAME=VALUE`; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// The server to connect to.
    #[command(flatten)]
    pub server: ServerAddress,
    /// Run the script on an embedded server (2 executors, a scratch data
    /// directory) instead of connecting to one.
    #[arg(long, conflicts_with_all = ["host", "port"])]
    pub embedded: bool,
    /// Config file for `--embedded`.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Plan every statement on the server without running any (a statement
    /// over a relation the script itself creates is checked when it runs).
    #[arg(long)]
    pub dry_run: bool,
}

/// `sluice run`.
pub async fn run(args: RunArgs) -> Result<()> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| ServerError::io(format!("reading {name}"), e))?;
    let vars = parse_vars(&args.vars)?;
    // Every variable and the whole script's syntax are checked before the
    // first statement runs.
    let statements = prepare(&name, &text, &vars)?;

    let target = TargetServer::start(&args.server, args.embedded, args.config.clone()).await?;
    let outcome = match connect_with_notices(&target.address).await {
        Ok((client, _)) if args.dry_run => plan_statements(&client, &name, &statements).await,
        Ok((client, notices)) => {
            // The server's stage progress of each statement, shown while it runs.
            if let Err(e) = client.batch_execute("SET sluice.progress = on").await {
                tracing::debug!("no progress notices: {e}");
            }
            let print = |line: String| println!("{line}");
            run_statements(&client, &name, &statements, &print, Some(&notices))
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    };
    target.stop().await;
    Ok(outcome?)
}

/// `NAME=VALUE` pairs; a later value for a name wins.
fn parse_vars(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if is_variable_name(name) => {
                Ok((name.to_string(), value.to_string()))
            }
            _ => Err(ServerError::Config(format!(
                "--var takes NAME=VALUE with a name of letters, digits and _, got '{pair}'"
            ))),
        })
        .collect()
}

fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_need_names() {
        let vars = parse_vars(&["day=2026-11-30".into(), "expr=a=b".into()]).unwrap();
        assert_eq!(vars["day"], "2026-11-30");
        assert_eq!(vars["expr"], "a=b");
        assert!(parse_vars(&["novalue".into()]).is_err());
        assert!(parse_vars(&["bad name=1".into()]).is_err());
    }
}
