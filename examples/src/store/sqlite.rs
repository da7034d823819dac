//! The embedded default: SQLite through deadpool-sqlite.
//!
//! The file is opened in WAL mode so readers never wait for the writer; write
//! transactions start `IMMEDIATE` so two writers queue on the busy timeout
//! instead of failing half-way.

use std::path::Path;
use std::time::Duration;

use deadpool_sqlite::rusqlite::{self, OptionalExtension, TransactionBehavior, params};
use deadpool_sqlite::{Hook, HookError, Pool, Runtime};

use super::model::{
    Blueprint, BlueprintInput, Deploy, DeployStatus, NewDeploy, NewProject, Owner, PoolStatus, Project, ProjectPatch,
    Stats, UserToken,
};
use super::{Page, StartError, Store, StoreError, StoreFuture, seed};

const MIGRATIONS: &[&str] = &[
    // 1: the schema.
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        token_secret TEXT NOT NULL
    );
    CREATE TABLE blueprints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        category TEXT NOT NULL,
        tags TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX blueprints_owner ON blueprints(owner_id);
    CREATE TABLE projects (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_id INTEGER NOT NULL REFERENCES users(id),
        blueprint_id INTEGER NOT NULL REFERENCES blueprints(id),
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        region TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX projects_blueprint ON projects(blueprint_id);
    CREATE TABLE deploys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER NOT NULL REFERENCES projects(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        environment TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER
    );
    CREATE INDEX deploys_status ON deploys(status, id);",
    // 2: client-chosen idempotency keys, so a create retried after a lost
    // reply finds the row it made instead of making another.
    "ALTER TABLE blueprints ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX blueprints_idempotency ON blueprints(owner_id, idempotency_key);",
];

const BLUEPRINT_COLUMNS: &str = "id, owner_id, name, description, category, tags, version, created_at, updated_at";
const PROJECT_COLUMNS: &str = "id, owner_id, blueprint_id, name, status, region, created_at, updated_at";
const DEPLOY_COLUMNS: &str =
    "id, project_id, user_id, environment, status, message, created_at, started_at, finished_at";

/// The SQLite [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: Pool,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file, migrates it and seeds
    /// an empty one with `seed_blueprints` blueprints.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened, or migrating or seeding fails.
    pub async fn open(
        path: &Path,
        pool_size: usize,
        wait_timeout: Duration,
        seed_blueprints: usize,
        metrics: &brisk_pool_metrics::PoolRecorder,
    ) -> Result<Self, StartError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StartError::new(format!("creating the directory {}", dir.display()), e))?;
        }
        let pool = deadpool_sqlite::Config::new(path)
            .builder(Runtime::Tokio1)
            .map_err(|e| StartError::new("configuring the SQLite pool", e.to_string()))?
            .max_size(pool_size)
            .wait_timeout(Some(wait_timeout))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(Runtime::Tokio1)
            .post_create(Hook::async_fn(|connection, _| {
                Box::pin(async move {
                    connection
                        .interact(|conn| {
                            conn.execute_batch(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                            )?;
                            conn.busy_timeout(Duration::from_secs(5))
                        })
                        .await
                        .map_err(|e| HookError::message(e.to_string()))?
                        .map_err(|e| HookError::message(e.to_string()))
                })
            }))
            .post_create(metrics.post_create_hook())
            .build()
            .map_err(|e| StartError::new("building the SQLite pool", e))?;
        metrics.watch(&pool);
        let store = Self { pool };
        let now = super::super::unix_now();
        store
            .with_conn(move |conn| migrate_and_seed(conn, seed_blueprints, now))
            .await
            .map_err(|e| StartError::new(format!("preparing the SQLite database {}", path.display()), e))?;
        Ok(store)
    }

    /// Runs `work` on a pooled connection (on a blocking thread).
    async fn with_conn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        // One unit of work, counted against the request's `db_queries` budget.
        brisk_budget::record(brisk_budget::DB_QUERIES, 1);
        let conn = self.pool.get().await.map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        conn.interact(work).await.map_err(|e| StoreError::Database(e.to_string().into()))?
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err {
            rusqlite::Error::SqliteFailure(ref code, _)
                if matches!(code.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                Self::Unavailable(Box::new(err))
            }
            other => Self::Database(Box::new(other)),
        }
    }
}

fn migrate_and_seed(conn: &mut rusqlite::Connection, seed_blueprints: usize, now: i64) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let applied: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version > applied {
            tracing::info!(version, "applying SQLite migration");
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", params![version, now])?;
        }
    }
    let users: i64 = tx.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
    if users == 0 {
        let data = seed::generate(seed_blueprints, now).map_err(|e| StoreError::Database(Box::new(e)))?;
        tracing::info!(blueprints = data.blueprints.len(), projects = data.projects.len(), "seeding SQLite");
        let mut insert = tx.prepare("INSERT INTO users (id, name, email, token_secret) VALUES (?1, ?2, ?3, ?4)")?;
        for u in &data.users {
            insert.execute(params![u.id, u.name, u.email, u.secret])?;
        }
        drop(insert);
        let mut insert = tx.prepare(
            "INSERT INTO blueprints (id, owner_id, name, description, category, tags, version, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7)",
        )?;
        for b in &data.blueprints {
            insert.execute(params![b.id, b.owner_id, b.name, b.description, b.category, b.tags, b.created_at])?;
        }
        drop(insert);
        let mut insert = tx.prepare(
            "INSERT INTO projects (id, owner_id, blueprint_id, name, status, region, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )?;
        for p in &data.projects {
            insert.execute(params![p.id, p.owner_id, p.blueprint_id, p.name, p.status, p.region, p.created_at])?;
        }
        drop(insert);
        let mut insert = tx.prepare(
            "INSERT INTO deploys (id, project_id, user_id, environment, status, message, created_at, started_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7 + 60)",
        )?;
        for d in &data.deploys {
            insert.execute(params![
                d.id,
                d.project_id,
                d.user_id,
                d.environment,
                d.status.as_str(),
                d.message,
                d.created_at
            ])?;
        }
        drop(insert);
    }
    tx.commit()?;
    Ok(())
}

fn blueprint_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Blueprint> {
    let tags: String = row.get(5)?;
    Ok(Blueprint {
        id: row.get(0)?,
        owner_id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        category: row.get(4)?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e)))?,
        version: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

fn project_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: row.get(0)?,
        owner_id: row.get(1)?,
        blueprint_id: row.get(2)?,
        name: row.get(3)?,
        status: row.get(4)?,
        region: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn deploy_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Deploy> {
    let status: String = row.get(4)?;
    Ok(Deploy {
        id: row.get(0)?,
        project_id: row.get(1)?,
        user_id: row.get(2)?,
        environment: row.get(3)?,
        status: DeployStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown deploy status {status:?}").into(),
            )
        })?,
        message: row.get(5)?,
        created_at: row.get(6)?,
        started_at: row.get(7)?,
        finished_at: row.get(8)?,
    })
}

fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("a list of strings serializes")
}

/// Why an owner-only write matched no row: the row is missing or someone else's.
fn missing_or_foreign(
    tx: &rusqlite::Transaction<'_>,
    table: &'static str,
    what: &'static str,
    id: i64,
) -> Result<StoreError, StoreError> {
    let exists = tx.query_row(&format!("SELECT 1 FROM {table} WHERE id = ?1"), [id], |_| Ok(())).optional()?.is_some();
    Ok(if exists { StoreError::Forbidden(what) } else { StoreError::NotFound(what) })
}

fn count_by(conn: &rusqlite::Connection, sql: &str) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
    let mut statement = conn.prepare(sql)?;
    let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.with_conn(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)))
    }

    fn pool_status(&self) -> PoolStatus {
        let status = self.pool.status();
        PoolStatus {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        }
    }

    fn user_tokens(&self) -> StoreFuture<'_, Vec<UserToken>> {
        Box::pin(self.with_conn(|conn| {
            let mut statement = conn.prepare("SELECT id, name, token_secret FROM users ORDER BY id")?;
            let rows = statement
                .query_map([], |r| Ok(UserToken { user_id: r.get(0)?, name: r.get(1)?, secret: r.get(2)? }))?;
            Ok(rows.collect::<Result<_, _>>()?)
        }))
    }

    fn owners(&self, ids: Vec<i64>) -> StoreFuture<'_, Vec<Owner>> {
        Box::pin(self.with_conn(move |conn| {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // One statement for the whole batch: the ids travel as one JSON array.
            let ids = serde_json::to_string(&ids).expect("a list of integers serializes");
            let mut statement =
                conn.prepare("SELECT id, name FROM users WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id")?;
            let rows = statement.query_map([ids], |r| Ok(Owner { id: r.get(0)?, name: r.get(1)? }))?;
            Ok(rows.collect::<Result<_, _>>()?)
        }))
    }

    fn list_blueprints(&self, after: i64, limit: u32) -> StoreFuture<'_, Page<Blueprint>> {
        Box::pin(self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {BLUEPRINT_COLUMNS} FROM blueprints WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = statement.query_map(params![after, i64::from(limit) + 1], blueprint_row)?;
            let mut items: Vec<Blueprint> = rows.collect::<Result<_, _>>()?;
            let has_more = items.len() > limit as usize;
            items.truncate(limit as usize);
            Ok(Page { items, has_more })
        }))
    }

    fn get_blueprint(&self, id: i64) -> StoreFuture<'_, Option<Blueprint>> {
        Box::pin(self.with_conn(move |conn| {
            let mut statement =
                conn.prepare_cached(&format!("SELECT {BLUEPRINT_COLUMNS} FROM blueprints WHERE id = ?1"))?;
            Ok(statement.query_row([id], blueprint_row).optional()?)
        }))
    }

    fn create_blueprint(
        &self,
        owner: i64,
        input: BlueprintInput,
        idempotency_key: Option<String>,
        now: i64,
    ) -> StoreFuture<'_, Blueprint> {
        Box::pin(self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let created = tx
                .query_row(
                    &format!(
                        "INSERT INTO blueprints (owner_id, name, description, category, tags, version, created_at, updated_at, idempotency_key)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6, ?7)
                         ON CONFLICT (owner_id, idempotency_key) DO NOTHING RETURNING {BLUEPRINT_COLUMNS}"
                    ),
                    params![owner, input.name, input.description, input.category, tags_json(&input.tags), now, idempotency_key],
                    blueprint_row,
                )
                .optional()?;
            let blueprint = match created {
                Some(blueprint) => blueprint,
                // The key was used before: answer with the row that request made.
                None => tx.query_row(
                    &format!("SELECT {BLUEPRINT_COLUMNS} FROM blueprints WHERE owner_id = ?1 AND idempotency_key = ?2"),
                    params![owner, idempotency_key],
                    blueprint_row,
                )?,
            };
            tx.commit()?;
            Ok(blueprint)
        }))
    }

    fn update_blueprint(&self, id: i64, owner: i64, input: BlueprintInput, now: i64) -> StoreFuture<'_, Blueprint> {
        Box::pin(self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let updated = tx
                .query_row(
                    &format!(
                        "UPDATE blueprints SET name = ?3, description = ?4, category = ?5, tags = ?6,
                         version = version + 1, updated_at = ?7
                         WHERE id = ?1 AND owner_id = ?2 RETURNING {BLUEPRINT_COLUMNS}"
                    ),
                    params![id, owner, input.name, input.description, input.category, tags_json(&input.tags), now],
                    blueprint_row,
                )
                .optional()?;
            match updated {
                Some(blueprint) => {
                    tx.commit()?;
                    Ok(blueprint)
                }
                None => Err(missing_or_foreign(&tx, "blueprints", "blueprint", id)?),
            }
        }))
    }

    fn delete_blueprint(&self, id: i64, owner: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let owner_of: Option<i64> =
                tx.query_row("SELECT owner_id FROM blueprints WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            match owner_of {
                None => return Err(StoreError::NotFound("blueprint")),
                Some(o) if o != owner => return Err(StoreError::Forbidden("blueprint")),
                Some(_) => {}
            }
            let used: i64 =
                tx.query_row("SELECT COUNT(*) FROM projects WHERE blueprint_id = ?1", [id], |r| r.get(0))?;
            if used > 0 {
                return Err(StoreError::Conflict(format!("blueprint {id} is used by {used} project(s)")));
            }
            tx.execute("DELETE FROM blueprints WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(())
        }))
    }

    fn list_projects(&self, after: i64, limit: u32) -> StoreFuture<'_, Page<Project>> {
        Box::pin(self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {PROJECT_COLUMNS} FROM projects WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = statement.query_map(params![after, i64::from(limit) + 1], project_row)?;
            let mut items: Vec<Project> = rows.collect::<Result<_, _>>()?;
            let has_more = items.len() > limit as usize;
            items.truncate(limit as usize);
            Ok(Page { items, has_more })
        }))
    }

    fn get_project(&self, id: i64) -> StoreFuture<'_, Option<Project>> {
        Box::pin(self.with_conn(move |conn| {
            let mut statement =
                conn.prepare_cached(&format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1"))?;
            Ok(statement.query_row([id], project_row).optional()?)
        }))
    }

    fn create_project(&self, owner: i64, input: NewProject, now: i64) -> StoreFuture<'_, Project> {
        Box::pin(self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists =
                tx.query_row("SELECT 1 FROM blueprints WHERE id = ?1", [input.blueprint_id], |_| Ok(())).optional()?;
            if exists.is_none() {
                return Err(StoreError::Invalid {
                    field: "blueprint_id",
                    message: format!("no blueprint with id {}", input.blueprint_id),
                });
            }
            let project = tx.query_row(
                &format!(
                    "INSERT INTO projects (owner_id, blueprint_id, name, status, region, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?5) RETURNING {PROJECT_COLUMNS}"
                ),
                params![owner, input.blueprint_id, input.name, input.region, now],
                project_row,
            )?;
            tx.commit()?;
            Ok(project)
        }))
    }

    fn update_project(&self, id: i64, owner: i64, patch: ProjectPatch, now: i64) -> StoreFuture<'_, Project> {
        Box::pin(self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let updated = tx
                .query_row(
                    &format!(
                        "UPDATE projects SET name = COALESCE(?3, name), status = COALESCE(?4, status),
                         region = COALESCE(?5, region), updated_at = ?6
                         WHERE id = ?1 AND owner_id = ?2 RETURNING {PROJECT_COLUMNS}"
                    ),
                    params![id, owner, patch.name, patch.status, patch.region, now],
                    project_row,
                )
                .optional()?;
            match updated {
                Some(project) => {
                    tx.commit()?;
                    Ok(project)
                }
                None => Err(missing_or_foreign(&tx, "projects", "project", id)?),
            }
        }))
    }

    fn stats(&self) -> StoreFuture<'_, Stats> {
        Box::pin(self.with_conn(|conn| {
            // One read transaction: every count comes from the same snapshot.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let projects_by_status = count_by(&tx, "SELECT status, COUNT(*) FROM projects GROUP BY status")?;
            let projects_by_region = count_by(&tx, "SELECT region, COUNT(*) FROM projects GROUP BY region")?;
            let blueprints_by_category = count_by(&tx, "SELECT category, COUNT(*) FROM blueprints GROUP BY category")?;
            let deploys_by_status = count_by(&tx, "SELECT status, COUNT(*) FROM deploys GROUP BY status")?;
            tx.finish()?;
            Ok(Stats {
                projects_total: projects_by_status.values().sum(),
                blueprints_total: blueprints_by_category.values().sum(),
                projects_by_status,
                projects_by_region,
                blueprints_by_category,
                deploys_by_status,
            })
        }))
    }

    fn create_deploy(&self, user: i64, input: NewDeploy, now: i64) -> StoreFuture<'_, Deploy> {
        Box::pin(self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let project: Option<(i64, String)> = tx
                .query_row("SELECT owner_id, status FROM projects WHERE id = ?1", [input.project_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            match project {
                None => {
                    return Err(StoreError::Invalid {
                        field: "project_id",
                        message: format!("no project with id {}", input.project_id),
                    });
                }
                Some((owner, _)) if owner != user => return Err(StoreError::Forbidden("project")),
                Some((_, status)) if status == "archived" => {
                    return Err(StoreError::Conflict(format!("project {} is archived", input.project_id)));
                }
                Some(_) => {}
            }
            let deploy = tx.query_row(
                &format!(
                    "INSERT INTO deploys (project_id, user_id, environment, status, message, created_at)
                     VALUES (?1, ?2, ?3, 'queued', 'waiting for a worker', ?4) RETURNING {DEPLOY_COLUMNS}"
                ),
                params![input.project_id, user, input.environment, now],
                deploy_row,
            )?;
            tx.commit()?;
            Ok(deploy)
        }))
    }

    fn get_deploy(&self, id: i64) -> StoreFuture<'_, Option<Deploy>> {
        Box::pin(self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached(&format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE id = ?1"))?;
            Ok(statement.query_row([id], deploy_row).optional()?)
        }))
    }

    fn claim_deploy(&self, now: i64) -> StoreFuture<'_, Option<Deploy>> {
        Box::pin(self.with_conn(move |conn| {
            // IMMEDIATE takes the write lock first, so the select and the update
            // cannot interleave with another worker's.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimed = tx
                .query_row(
                    &format!(
                        "UPDATE deploys SET status = 'running', started_at = ?1, message = 'deploying'
                         WHERE id = (SELECT id FROM deploys WHERE status = 'queued' ORDER BY id LIMIT 1)
                         RETURNING {DEPLOY_COLUMNS}"
                    ),
                    [now],
                    deploy_row,
                )
                .optional()?;
            tx.commit()?;
            Ok(claimed)
        }))
    }

    fn finish_deploy(&self, id: i64, status: DeployStatus, message: String, now: i64) -> StoreFuture<'_, Deploy> {
        Box::pin(self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let deploy = tx
                .query_row(
                    &format!(
                        "UPDATE deploys SET status = ?2, message = ?3, finished_at = ?4
                         WHERE id = ?1 AND status = 'running' RETURNING {DEPLOY_COLUMNS}"
                    ),
                    params![id, status.as_str(), message, now],
                    deploy_row,
                )
                .optional()?
                .ok_or(StoreError::NotFound("running deploy"))?;
            tx.commit()?;
            Ok(deploy)
        }))
    }

    fn fail_stale_deploys(&self, started_before: i64, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE deploys SET status = 'failed', message = 'worker stopped before the deploy ended', finished_at = ?2
                 WHERE status = 'running' AND started_at < ?1",
                params![started_before, now],
            )?;
            tx.commit()?;
            Ok(changed as u64)
        }))
    }
}
