//! A per-connection cap on named prepared statements and portals: each holds
//! a plan in the server's memory until the client closes it, and a client
//! that never does (10,000 statements took a server from 274 MB to 4.2 GB)
//! would otherwise grow the server without bound. PostgreSQL has no such
//! cap; drivers keep a few hundred at most (pgjdbc 256, psycopg 100).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Ident, Statement};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, DEFAULT_NAME};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};

use sluice_engine::pg_cursors::OpenCursors;
use sluice_engine::sqlstate::SqlState;

use super::hooks::no_rows_plan;
use super::sqlstate::user_error;

/// Most named prepared statements (and, apart, named portals) one
/// connection keeps.
pub const MAX_PER_CONNECTION: usize = 1000;

/// The names a connection has stored of one kind (statements or portals).
#[derive(Debug)]
pub struct NameCap {
    /// What the names are, for the error message.
    kind: &'static str,
    names: Mutex<BTreeSet<String>>,
}

impl NameCap {
    /// An empty set of names of `kind` ("prepared statements", "portals").
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            names: Mutex::default(),
        }
    }

    /// Records that `name` is about to be stored. `stored` tells whether a
    /// name is still in the connection's store (closed ones are forgotten
    /// when the cap is reached). `Err` (54000) when the connection already
    /// keeps [`MAX_PER_CONNECTION`] others.
    pub fn admit(&self, name: Option<&str>, stored: impl Fn(&str) -> bool) -> PgWireResult<()> {
        let name = name.unwrap_or(DEFAULT_NAME);
        // The unnamed one is replaced each time.
        if name == DEFAULT_NAME {
            return Ok(());
        }
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.contains(name) {
            return Ok(());
        }
        if names.len() >= MAX_PER_CONNECTION {
            names.retain(|name| stored(name));
        }
        if names.len() >= MAX_PER_CONNECTION {
            return Err(user_error(
                SqlState::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "too many {}: this connection keeps {MAX_PER_CONNECTION} already; close \
                     some (Close, DEALLOCATE, CLOSE) before making more",
                    self.kind
                ),
            ));
        }
        names.insert(name.to_string());
        Ok(())
    }
}

impl NameCap {
    /// Every name recorded, forgetting them.
    fn take_all(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Forgets `name`.
    fn forget(&self, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// The caps of one connection: its prepared statements (protocol `Parse`
/// and SQL `PREPARE`, counted apart) and portals (`Bind` and `DECLARE`).
pub struct ConnectionCaps {
    /// Statements prepared over the extended protocol.
    pub statements: NameCap,
    /// Statements prepared with SQL `PREPARE` (kept by DataFusion).
    pub sql_statements: NameCap,
    /// Portals bound over the extended protocol and cursors.
    pub portals: NameCap,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        Self {
            statements: NameCap::new("prepared statements"),
            sql_statements: NameCap::new("prepared statements (PREPARE)"),
            portals: NameCap::new("portals and cursors"),
        }
    }
}

/// The name DataFusion keeps a SQL-prepared statement under: unquoted
/// names in lower case.
fn sql_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// Counts `PREPARE` and `DECLARE … CURSOR` against the connection's caps
/// before DataFusion and the cursor hook keep them, and runs `DEALLOCATE
/// name | ALL` (what drivers send when they reset a pooled connection).
pub struct CapsHook {
    /// The connection's caps.
    pub caps: Arc<ConnectionCaps>,
}

impl CapsHook {
    /// `Some` with the answer when the statement is handled here, `Some(Err)`
    /// when it is over a cap; `None` passes it on.
    async fn run(
        &self,
        statement: &Statement,
        context: &SessionContext,
        client: &dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let store = client.portal_store();
        let caps = &self.caps;
        match statement {
            Statement::Prepare { name, .. } => {
                // Counted until DEALLOCATE: a PREPARE that fails counts too.
                caps.sql_statements
                    .admit(Some(&sql_name(name)), |_| true)
                    .err()
                    .map(Err)
            }
            Statement::Declare { stmts } => {
                let cursors = OpenCursors::of(context.state_ref().read().config());
                let open = |name: &str| {
                    store.get_portal(name).is_some()
                        || cursors.as_ref().is_some_and(|open| open.is_open(name))
                };
                stmts
                    .iter()
                    .flat_map(|declare| &declare.names)
                    .find_map(|name| caps.portals.admit(Some(&name.value), open).err())
                    .map(Err)
            }
            Statement::Deallocate { name, .. }
                if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
            {
                for name in caps.statements.take_all() {
                    store.rm_statement(&name);
                }
                for name in caps.sql_statements.take_all() {
                    let deallocate = format!("DEALLOCATE \"{}\"", name.replace('"', "\"\""));
                    if let Err(e) = run_sql(context, &deallocate).await {
                        return Some(Err(e));
                    }
                }
                Some(Ok(Response::Execution(Tag::new("DEALLOCATE ALL"))))
            }
            Statement::Deallocate { name, .. } => {
                if store.get_statement(&name.value).is_some() {
                    store.rm_statement(&name.value);
                    caps.statements.forget(&name.value);
                    return Some(Ok(Response::Execution(Tag::new("DEALLOCATE"))));
                }
                // DataFusion's own: forgotten here, deallocated there.
                caps.sql_statements.forget(&sql_name(name));
                None
            }
            _ => None,
        }
    }
}

/// Runs `sql` in `context` to its end.
async fn run_sql(context: &SessionContext, sql: &str) -> PgWireResult<()> {
    let api = |e| PgWireError::ApiError(Box::new(e));
    context
        .sql(sql)
        .await
        .map_err(api)?
        .collect()
        .await
        .map_err(api)?;
    Ok(())
}

#[async_trait]
impl QueryHook for CapsHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.run(statement, context, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        matches!(statement, Statement::Deallocate { .. }).then(|| Ok(no_rows_plan()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.run(statement, context, client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_capped_and_closed_ones_forgotten() {
        let cap = NameCap::new("prepared statements");
        let open = |_: &str| true;
        for i in 0..MAX_PER_CONNECTION {
            cap.admit(Some(&format!("s{i}")), open).unwrap();
        }
        cap.admit(Some("s1"), open).unwrap();
        cap.admit(None, open).unwrap();
        assert!(cap.admit(Some("one more"), open).is_err());
        // Once the client closed some, there is room again.
        cap.admit(Some("one more"), |name| name != "s7").unwrap();
        assert!(cap.admit(Some("and another"), open).is_err());
    }
}
