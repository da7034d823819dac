//! PostgreSQL through deadpool-postgres, directly or through PgBouncer.
//!
//! PgBouncer in transaction mode hands a client a different server connection
//! for each transaction, so a statement prepared in one transaction may not
//! exist in the next. Every statement here therefore goes out with
//! `query_typed`: parse, bind and execute in one round trip on the unnamed
//! statement, never a named prepared statement that outlives its transaction.
//! Writes of more than one statement run in an explicit transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

use super::model::{
    Blueprint, BlueprintInput, Deploy, DeployStatus, NewDeploy, NewProject, Owner, PoolStatus, Project, ProjectPatch,
    Stats, UserToken,
};
use super::{Page, StartError, Store, StoreError, StoreFuture, seed};

/// Serialises migrations of instances starting at the same time.
const MIGRATION_LOCK: i64 = 0x0b1e_9817;

const MIGRATIONS: &[&str] = &[
    // 1: the schema.
    "CREATE TABLE users (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        token_secret TEXT NOT NULL
    );
    CREATE TABLE blueprints (
        id BIGSERIAL PRIMARY KEY,
        owner_id BIGINT NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        category TEXT NOT NULL,
        tags TEXT NOT NULL,
        version BIGINT NOT NULL DEFAULT 1,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX blueprints_owner ON blueprints(owner_id);
    CREATE TABLE projects (
        id BIGSERIAL PRIMARY KEY,
        owner_id BIGINT NOT NULL REFERENCES users(id),
        blueprint_id BIGINT NOT NULL REFERENCES blueprints(id),
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        region TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX projects_blueprint ON projects(blueprint_id);
    CREATE TABLE deploys (
        id BIGSERIAL PRIMARY KEY,
        project_id BIGINT NOT NULL REFERENCES projects(id),
        user_id BIGINT NOT NULL REFERENCES users(id),
        environment TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT
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

/// The PostgreSQL [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool,
}

type Param<'a> = (&'a (dyn ToSql + Sync), Type);

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        // Connection exceptions (08), operator intervention such as a shutdown
        // (57) and insufficient resources (53) pass: they are "try again".
        let transient = match err.code() {
            None => true,
            Some(code) => matches!(&code.code()[..2], "08" | "53" | "57"),
        };
        if transient || err.is_closed() { Self::Unavailable(Box::new(err)) } else { Self::Database(Box::new(err)) }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(Box::new(err))
    }
}

impl PostgresStore {
    /// Connects to `url`, migrates the database and seeds an empty one.
    ///
    /// # Errors
    ///
    /// When the URL is not valid, the server cannot be reached, or migrating
    /// or seeding fails.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        wait_timeout: Duration,
        seed_blueprints: usize,
        metrics: &brisk_pool_metrics::PoolRecorder,
    ) -> Result<Self, StartError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| StartError::new("DATABASE_URL", e))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(wait_timeout))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(Runtime::Tokio1)
            .post_create(metrics.post_create_hook())
            .build()
            .map_err(|e| StartError::new("building the PostgreSQL pool", e))?;
        metrics.watch(&pool);
        let store = Self { pool };
        store
            .migrate_and_seed(seed_blueprints, super::super::unix_now())
            .await
            .map_err(|e| StartError::new("preparing the PostgreSQL database", e))?;
        Ok(store)
    }

    async fn migrate_and_seed(&self, seed_blueprints: usize, now: i64) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.query_typed("SELECT pg_advisory_xact_lock($1)", &[(&MIGRATION_LOCK, Type::INT8)]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let applied: i64 =
            tx.query_typed("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?[0].try_get(0)?;
        for (index, sql) in MIGRATIONS.iter().enumerate() {
            let version = index as i64 + 1;
            if version > applied {
                tracing::info!(version, "applying PostgreSQL migration");
                tx.batch_execute(sql).await?;
                tx.query_typed(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[(&version, Type::INT8), (&now, Type::INT8)],
                )
                .await?;
            }
        }
        let users: i64 = tx.query_typed("SELECT COUNT(*) FROM users", &[]).await?[0].try_get(0)?;
        if users == 0 {
            let data = seed::generate(seed_blueprints, now).map_err(|e| StoreError::Database(Box::new(e)))?;
            tracing::info!(blueprints = data.blueprints.len(), projects = data.projects.len(), "seeding PostgreSQL");
            // Whole tables in one statement each: arrays unnested server-side.
            let (ids, names, emails, secrets): (Vec<i64>, Vec<&str>, Vec<&str>, Vec<&str>) =
                unzip4(data.users.iter().map(|u| (u.id, u.name.as_str(), u.email.as_str(), u.secret.as_str())));
            tx.query_typed(
                "INSERT INTO users (id, name, email, token_secret) SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[])",
                &[(&ids, Type::INT8_ARRAY), (&names, Type::TEXT_ARRAY), (&emails, Type::TEXT_ARRAY), (&secrets, Type::TEXT_ARRAY)],
            )
            .await?;
            let b = &data.blueprints;
            let ids: Vec<i64> = b.iter().map(|b| b.id).collect();
            let owners: Vec<i64> = b.iter().map(|b| b.owner_id).collect();
            let names: Vec<&str> = b.iter().map(|b| b.name.as_str()).collect();
            let descriptions: Vec<&str> = b.iter().map(|b| b.description.as_str()).collect();
            let categories: Vec<&str> = b.iter().map(|b| b.category).collect();
            let tags: Vec<&str> = b.iter().map(|b| b.tags.as_str()).collect();
            let created: Vec<i64> = b.iter().map(|b| b.created_at).collect();
            tx.query_typed(
                "INSERT INTO blueprints (id, owner_id, name, description, category, tags, version, created_at, updated_at)
                 SELECT i, o, n, d, c, t, 1, ts, ts
                 FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[]) AS u(i, o, n, d, c, t, ts)",
                &[
                    (&ids, Type::INT8_ARRAY),
                    (&owners, Type::INT8_ARRAY),
                    (&names, Type::TEXT_ARRAY),
                    (&descriptions, Type::TEXT_ARRAY),
                    (&categories, Type::TEXT_ARRAY),
                    (&tags, Type::TEXT_ARRAY),
                    (&created, Type::INT8_ARRAY),
                ],
            )
            .await?;
            let p = &data.projects;
            let ids: Vec<i64> = p.iter().map(|p| p.id).collect();
            let owners: Vec<i64> = p.iter().map(|p| p.owner_id).collect();
            let blueprints: Vec<i64> = p.iter().map(|p| p.blueprint_id).collect();
            let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
            let statuses: Vec<&str> = p.iter().map(|p| p.status).collect();
            let regions: Vec<&str> = p.iter().map(|p| p.region).collect();
            let created: Vec<i64> = p.iter().map(|p| p.created_at).collect();
            tx.query_typed(
                "INSERT INTO projects (id, owner_id, blueprint_id, name, status, region, created_at, updated_at)
                 SELECT i, o, b, n, s, r, ts, ts
                 FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[]) AS u(i, o, b, n, s, r, ts)",
                &[
                    (&ids, Type::INT8_ARRAY),
                    (&owners, Type::INT8_ARRAY),
                    (&blueprints, Type::INT8_ARRAY),
                    (&names, Type::TEXT_ARRAY),
                    (&statuses, Type::TEXT_ARRAY),
                    (&regions, Type::TEXT_ARRAY),
                    (&created, Type::INT8_ARRAY),
                ],
            )
            .await?;
            let d = &data.deploys;
            let ids: Vec<i64> = d.iter().map(|d| d.id).collect();
            let projects: Vec<i64> = d.iter().map(|d| d.project_id).collect();
            let users: Vec<i64> = d.iter().map(|d| d.user_id).collect();
            let environments: Vec<&str> = d.iter().map(|d| d.environment).collect();
            let statuses: Vec<&str> = d.iter().map(|d| d.status.as_str()).collect();
            let messages: Vec<&str> = d.iter().map(|d| d.message).collect();
            let created: Vec<i64> = d.iter().map(|d| d.created_at).collect();
            tx.query_typed(
                "INSERT INTO deploys (id, project_id, user_id, environment, status, message, created_at, started_at, finished_at)
                 SELECT i, p, u, e, s, m, ts, ts, ts + 60
                 FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[]) AS x(i, p, u, e, s, m, ts)",
                &[
                    (&ids, Type::INT8_ARRAY),
                    (&projects, Type::INT8_ARRAY),
                    (&users, Type::INT8_ARRAY),
                    (&environments, Type::TEXT_ARRAY),
                    (&statuses, Type::TEXT_ARRAY),
                    (&messages, Type::TEXT_ARRAY),
                    (&created, Type::INT8_ARRAY),
                ],
            )
            .await?;
            // Explicit ids leave the sequences behind; move them past the seed.
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('users', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM users), 1));
                 SELECT setval(pg_get_serial_sequence('blueprints', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM blueprints), 1));
                 SELECT setval(pg_get_serial_sequence('projects', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM projects), 1));
                 SELECT setval(pg_get_serial_sequence('deploys', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM deploys), 1));",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A pooled connection for one unit of work, counted against the
    /// request's `db_queries` budget.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        brisk_budget::record(brisk_budget::DB_QUERIES, 1);
        Ok(self.pool.get().await?)
    }

    /// One statement outside an explicit transaction (one round trip, unnamed statement).
    async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        Ok(client.query_typed(sql, params).await?)
    }
}

fn unzip4<A, B, C, D>(items: impl Iterator<Item = (A, B, C, D)>) -> (Vec<A>, Vec<B>, Vec<C>, Vec<D>) {
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (w, x, y, z) in items {
        a.push(w);
        b.push(x);
        c.push(y);
        d.push(z);
    }
    (a, b, c, d)
}

fn invalid_row(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("unreadable {what} row: {err}").into())
}

fn blueprint_row(row: &Row) -> Result<Blueprint, StoreError> {
    let tags: String = row.try_get(5)?;
    Ok(Blueprint {
        id: row.try_get(0)?,
        owner_id: row.try_get(1)?,
        name: row.try_get(2)?,
        description: row.try_get(3)?,
        category: row.try_get(4)?,
        tags: serde_json::from_str(&tags).map_err(|e| invalid_row("blueprint", e))?,
        version: row.try_get(6)?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
    })
}

fn project_row(row: &Row) -> Result<Project, StoreError> {
    Ok(Project {
        id: row.try_get(0)?,
        owner_id: row.try_get(1)?,
        blueprint_id: row.try_get(2)?,
        name: row.try_get(3)?,
        status: row.try_get(4)?,
        region: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}

fn deploy_row(row: &Row) -> Result<Deploy, StoreError> {
    let status: String = row.try_get(4)?;
    Ok(Deploy {
        id: row.try_get(0)?,
        project_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        environment: row.try_get(3)?,
        status: DeployStatus::parse(&status).ok_or_else(|| invalid_row("deploy", format!("status {status:?}")))?,
        message: row.try_get(5)?,
        created_at: row.try_get(6)?,
        started_at: row.try_get(7)?,
        finished_at: row.try_get(8)?,
    })
}

fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("a list of strings serializes")
}

/// Why an owner-only write matched no row: the row is missing or someone else's.
async fn missing_or_foreign(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &'static str,
    what: &'static str,
    id: i64,
) -> Result<StoreError, StoreError> {
    let rows = tx.query_typed(&format!("SELECT 1 FROM {table} WHERE id = $1"), &[(&id, Type::INT8)]).await?;
    Ok(if rows.is_empty() { StoreError::NotFound(what) } else { StoreError::Forbidden(what) })
}

impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.query("SELECT 1", &[]).await?;
            Ok(())
        })
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
        Box::pin(async move {
            let rows = self.query("SELECT id, name, token_secret FROM users ORDER BY id", &[]).await?;
            rows.iter()
                .map(|r| Ok(UserToken { user_id: r.try_get(0)?, name: r.try_get(1)?, secret: r.try_get(2)? }))
                .collect()
        })
    }

    fn owners(&self, ids: Vec<i64>) -> StoreFuture<'_, Vec<Owner>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let rows = self
                .query("SELECT id, name FROM users WHERE id = ANY($1) ORDER BY id", &[(&ids, Type::INT8_ARRAY)])
                .await?;
            rows.iter().map(|r| Ok(Owner { id: r.try_get(0)?, name: r.try_get(1)? })).collect()
        })
    }

    fn list_blueprints(&self, after: i64, limit: u32) -> StoreFuture<'_, Page<Blueprint>> {
        Box::pin(async move {
            let fetch = i64::from(limit) + 1;
            let rows = self
                .query(
                    &format!("SELECT {BLUEPRINT_COLUMNS} FROM blueprints WHERE id > $1 ORDER BY id LIMIT $2"),
                    &[(&after, Type::INT8), (&fetch, Type::INT8)],
                )
                .await?;
            let mut items = rows.iter().map(blueprint_row).collect::<Result<Vec<_>, _>>()?;
            let has_more = items.len() > limit as usize;
            items.truncate(limit as usize);
            Ok(Page { items, has_more })
        })
    }

    fn get_blueprint(&self, id: i64) -> StoreFuture<'_, Option<Blueprint>> {
        Box::pin(async move {
            let rows = self
                .query(&format!("SELECT {BLUEPRINT_COLUMNS} FROM blueprints WHERE id = $1"), &[(&id, Type::INT8)])
                .await?;
            rows.first().map(blueprint_row).transpose()
        })
    }

    fn create_blueprint(
        &self,
        owner: i64,
        input: BlueprintInput,
        idempotency_key: Option<String>,
        now: i64,
    ) -> StoreFuture<'_, Blueprint> {
        Box::pin(async move {
            let tags = tags_json(&input.tags);
            let rows = self
                .query(
                    &format!(
                        "INSERT INTO blueprints (owner_id, name, description, category, tags, version, created_at, updated_at, idempotency_key)
                         VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7)
                         ON CONFLICT (owner_id, idempotency_key) DO NOTHING RETURNING {BLUEPRINT_COLUMNS}"
                    ),
                    &[
                        (&owner, Type::INT8),
                        (&input.name, Type::TEXT),
                        (&input.description, Type::TEXT),
                        (&input.category, Type::TEXT),
                        (&tags, Type::TEXT),
                        (&now, Type::INT8),
                        (&idempotency_key, Type::TEXT),
                    ],
                )
                .await?;
            if let Some(row) = rows.first() {
                return blueprint_row(row);
            }
            // The key was used before: answer with the row that request made.
            // A statement of its own, so it sees the other request's commit.
            let rows = self
                .query(
                    &format!("SELECT {BLUEPRINT_COLUMNS} FROM blueprints WHERE owner_id = $1 AND idempotency_key = $2"),
                    &[(&owner, Type::INT8), (&idempotency_key, Type::TEXT)],
                )
                .await?;
            rows.first().map(blueprint_row).ok_or_else(|| invalid_row("blueprint", "INSERT returned nothing"))?
        })
    }

    fn update_blueprint(&self, id: i64, owner: i64, input: BlueprintInput, now: i64) -> StoreFuture<'_, Blueprint> {
        Box::pin(async move {
            let tags = tags_json(&input.tags);
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let rows = tx
                .query_typed(
                    &format!(
                        "UPDATE blueprints SET name = $3, description = $4, category = $5, tags = $6,
                         version = version + 1, updated_at = $7
                         WHERE id = $1 AND owner_id = $2 RETURNING {BLUEPRINT_COLUMNS}"
                    ),
                    &[
                        (&id, Type::INT8),
                        (&owner, Type::INT8),
                        (&input.name, Type::TEXT),
                        (&input.description, Type::TEXT),
                        (&input.category, Type::TEXT),
                        (&tags, Type::TEXT),
                        (&now, Type::INT8),
                    ],
                )
                .await?;
            match rows.first() {
                Some(row) => {
                    let blueprint = blueprint_row(row)?;
                    tx.commit().await?;
                    Ok(blueprint)
                }
                None => Err(missing_or_foreign(&tx, "blueprints", "blueprint", id).await?),
            }
        })
    }

    fn delete_blueprint(&self, id: i64, owner: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Locks the row so no project can start using it before the delete.
            let rows = tx
                .query_typed("SELECT owner_id FROM blueprints WHERE id = $1 FOR UPDATE", &[(&id, Type::INT8)])
                .await?;
            match rows.first().map(|r| r.try_get::<_, i64>(0)).transpose()? {
                None => return Err(StoreError::NotFound("blueprint")),
                Some(o) if o != owner => return Err(StoreError::Forbidden("blueprint")),
                Some(_) => {}
            }
            let used: i64 =
                tx.query_typed("SELECT COUNT(*) FROM projects WHERE blueprint_id = $1", &[(&id, Type::INT8)]).await?[0]
                    .try_get(0)?;
            if used > 0 {
                return Err(StoreError::Conflict(format!("blueprint {id} is used by {used} project(s)")));
            }
            tx.query_typed("DELETE FROM blueprints WHERE id = $1", &[(&id, Type::INT8)]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_projects(&self, after: i64, limit: u32) -> StoreFuture<'_, Page<Project>> {
        Box::pin(async move {
            let fetch = i64::from(limit) + 1;
            let rows = self
                .query(
                    &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id > $1 ORDER BY id LIMIT $2"),
                    &[(&after, Type::INT8), (&fetch, Type::INT8)],
                )
                .await?;
            let mut items = rows.iter().map(project_row).collect::<Result<Vec<_>, _>>()?;
            let has_more = items.len() > limit as usize;
            items.truncate(limit as usize);
            Ok(Page { items, has_more })
        })
    }

    fn get_project(&self, id: i64) -> StoreFuture<'_, Option<Project>> {
        Box::pin(async move {
            let rows = self
                .query(&format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"), &[(&id, Type::INT8)])
                .await?;
            rows.first().map(project_row).transpose()
        })
    }

    fn create_project(&self, owner: i64, input: NewProject, now: i64) -> StoreFuture<'_, Project> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // FOR SHARE: the blueprint cannot be deleted under the new project.
            let exists = tx
                .query_typed("SELECT 1 FROM blueprints WHERE id = $1 FOR SHARE", &[(&input.blueprint_id, Type::INT8)])
                .await?;
            if exists.is_empty() {
                return Err(StoreError::Invalid {
                    field: "blueprint_id",
                    message: format!("no blueprint with id {}", input.blueprint_id),
                });
            }
            let rows = tx
                .query_typed(
                    &format!(
                        "INSERT INTO projects (owner_id, blueprint_id, name, status, region, created_at, updated_at)
                         VALUES ($1, $2, $3, 'active', $4, $5, $5) RETURNING {PROJECT_COLUMNS}"
                    ),
                    &[
                        (&owner, Type::INT8),
                        (&input.blueprint_id, Type::INT8),
                        (&input.name, Type::TEXT),
                        (&input.region, Type::TEXT),
                        (&now, Type::INT8),
                    ],
                )
                .await?;
            let project =
                rows.first().map(project_row).ok_or_else(|| invalid_row("project", "INSERT returned nothing"))??;
            tx.commit().await?;
            Ok(project)
        })
    }

    fn update_project(&self, id: i64, owner: i64, patch: ProjectPatch, now: i64) -> StoreFuture<'_, Project> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let rows = tx
                .query_typed(
                    &format!(
                        "UPDATE projects SET name = COALESCE($3, name), status = COALESCE($4, status),
                         region = COALESCE($5, region), updated_at = $6
                         WHERE id = $1 AND owner_id = $2 RETURNING {PROJECT_COLUMNS}"
                    ),
                    &[
                        (&id, Type::INT8),
                        (&owner, Type::INT8),
                        (&patch.name, Type::TEXT),
                        (&patch.status, Type::TEXT),
                        (&patch.region, Type::TEXT),
                        (&now, Type::INT8),
                    ],
                )
                .await?;
            match rows.first() {
                Some(row) => {
                    let project = project_row(row)?;
                    tx.commit().await?;
                    Ok(project)
                }
                None => Err(missing_or_foreign(&tx, "projects", "project", id).await?),
            }
        })
    }

    fn stats(&self) -> StoreFuture<'_, Stats> {
        Box::pin(async move {
            // One statement, so every count comes from the same snapshot.
            let rows = self
                .query(
                    "SELECT 'status', status, COUNT(*) FROM projects GROUP BY status
                     UNION ALL SELECT 'region', region, COUNT(*) FROM projects GROUP BY region
                     UNION ALL SELECT 'category', category, COUNT(*) FROM blueprints GROUP BY category
                     UNION ALL SELECT 'deploy', status, COUNT(*) FROM deploys GROUP BY status",
                    &[],
                )
                .await?;
            let mut stats = Stats::default();
            for row in &rows {
                let (kind, key, count): (String, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                let map: &mut BTreeMap<String, i64> = match kind.as_str() {
                    "status" => &mut stats.projects_by_status,
                    "region" => &mut stats.projects_by_region,
                    "category" => &mut stats.blueprints_by_category,
                    _ => &mut stats.deploys_by_status,
                };
                map.insert(key, count);
            }
            stats.projects_total = stats.projects_by_status.values().sum();
            stats.blueprints_total = stats.blueprints_by_category.values().sum();
            Ok(stats)
        })
    }

    fn create_deploy(&self, user: i64, input: NewDeploy, now: i64) -> StoreFuture<'_, Deploy> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let rows = tx
                .query_typed(
                    "SELECT owner_id, status FROM projects WHERE id = $1 FOR SHARE",
                    &[(&input.project_id, Type::INT8)],
                )
                .await?;
            let project: Option<(i64, String)> =
                rows.first().map(|r| Ok::<_, StoreError>((r.try_get(0)?, r.try_get(1)?))).transpose()?;
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
            let rows = tx
                .query_typed(
                    &format!(
                        "INSERT INTO deploys (project_id, user_id, environment, status, message, created_at)
                         VALUES ($1, $2, $3, 'queued', 'waiting for a worker', $4) RETURNING {DEPLOY_COLUMNS}"
                    ),
                    &[
                        (&input.project_id, Type::INT8),
                        (&user, Type::INT8),
                        (&input.environment, Type::TEXT),
                        (&now, Type::INT8),
                    ],
                )
                .await?;
            let deploy =
                rows.first().map(deploy_row).ok_or_else(|| invalid_row("deploy", "INSERT returned nothing"))??;
            tx.commit().await?;
            Ok(deploy)
        })
    }

    fn get_deploy(&self, id: i64) -> StoreFuture<'_, Option<Deploy>> {
        Box::pin(async move {
            let rows = self
                .query(&format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE id = $1"), &[(&id, Type::INT8)])
                .await?;
            rows.first().map(deploy_row).transpose()
        })
    }

    fn claim_deploy(&self, now: i64) -> StoreFuture<'_, Option<Deploy>> {
        Box::pin(async move {
            // SKIP LOCKED: workers on other instances take the next job instead of waiting.
            let rows = self
                .query(
                    &format!(
                        "UPDATE deploys SET status = 'running', started_at = $1, message = 'deploying'
                         WHERE id = (SELECT id FROM deploys WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                         RETURNING {DEPLOY_COLUMNS}"
                    ),
                    &[(&now, Type::INT8)],
                )
                .await?;
            rows.first().map(deploy_row).transpose()
        })
    }

    fn finish_deploy(&self, id: i64, status: DeployStatus, message: String, now: i64) -> StoreFuture<'_, Deploy> {
        Box::pin(async move {
            let status = status.as_str();
            let rows = self
                .query(
                    &format!(
                        "UPDATE deploys SET status = $2, message = $3, finished_at = $4
                         WHERE id = $1 AND status = 'running' RETURNING {DEPLOY_COLUMNS}"
                    ),
                    &[(&id, Type::INT8), (&status, Type::TEXT), (&message, Type::TEXT), (&now, Type::INT8)],
                )
                .await?;
            rows.first().map(deploy_row).ok_or(StoreError::NotFound("running deploy"))?
        })
    }

    fn fail_stale_deploys(&self, started_before: i64, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let rows = self
                .query(
                    "UPDATE deploys SET status = 'failed', message = 'worker stopped before the deploy ended', finished_at = $2
                     WHERE status = 'running' AND started_at < $1 RETURNING id",
                    &[(&started_before, Type::INT8), (&now, Type::INT8)],
                )
                .await?;
            Ok(rows.len() as u64)
        })
    }
}
