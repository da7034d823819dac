//! The data layer: one [`Store`] trait, two engines.
//!
//! [`SqliteStore`] is the embedded default (deadpool-sqlite, bundled SQLite);
//! [`PostgresStore`] talks to PostgreSQL directly or through PgBouncer in
//! transaction mode. Every operation is one unit of work in one transaction,
//! so a failure leaves nothing half-written.

mod model;
mod postgres;
mod seed;
mod sqlite;

use std::fmt;

use futures_util::future::BoxFuture;

pub use self::model::{
    Blueprint, BlueprintInput, CATEGORIES, Deploy, DeployStatus, ENVIRONMENTS, NewDeploy, NewProject, Owner,
    PROJECT_STATUSES, PoolStatus, Project, ProjectPatch, REGIONS, Stats, UserToken,
};
pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;

/// What a [`Store`] method returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// A page of rows in id order, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows, ascending by id.
    pub items: Vec<T>,
    /// Whether rows with larger ids exist.
    pub has_more: bool,
}

/// The database behind the service.
///
/// Each method is one unit of work: reads see one snapshot, writes commit
/// completely or not at all. Ids are positive; `after` is the last id of the
/// previous page (exclusive).
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn engine(&self) -> &'static str;
    /// A round trip to the database.
    fn ping(&self) -> StoreFuture<'_, ()>;
    /// The connection pool's state right now.
    fn pool_status(&self) -> PoolStatus;

    /// Every user's id and API token secret (for bearer-token checks).
    fn user_tokens(&self) -> StoreFuture<'_, Vec<UserToken>>;
    /// The public view of the users with these ids; unknown ids are left out.
    /// One query, however many ids.
    fn owners(&self, ids: Vec<i64>) -> StoreFuture<'_, Vec<Owner>>;

    /// Blueprints with id > `after`, at most `limit`.
    fn list_blueprints(&self, after: i64, limit: u32) -> StoreFuture<'_, Page<Blueprint>>;
    /// One blueprint.
    fn get_blueprint(&self, id: i64) -> StoreFuture<'_, Option<Blueprint>>;
    /// Creates a blueprint owned by `owner`. With an `idempotency_key` the
    /// owner already used, creates nothing and returns the blueprint made
    /// under that key, so a create retried after a lost reply is not doubled.
    fn create_blueprint(
        &self,
        owner: i64,
        input: BlueprintInput,
        idempotency_key: Option<String>,
        now: i64,
    ) -> StoreFuture<'_, Blueprint>;
    /// Replaces a blueprint's fields; only its owner may. Bumps `version`.
    fn update_blueprint(&self, id: i64, owner: i64, input: BlueprintInput, now: i64) -> StoreFuture<'_, Blueprint>;
    /// Deletes a blueprint; only its owner may, and not while a project uses it.
    fn delete_blueprint(&self, id: i64, owner: i64) -> StoreFuture<'_, ()>;

    /// Projects with id > `after`, at most `limit`.
    fn list_projects(&self, after: i64, limit: u32) -> StoreFuture<'_, Page<Project>>;
    /// One project.
    fn get_project(&self, id: i64) -> StoreFuture<'_, Option<Project>>;
    /// Creates a project owned by `owner`; its blueprint must exist.
    fn create_project(&self, owner: i64, input: NewProject, now: i64) -> StoreFuture<'_, Project>;
    /// Changes some of a project's fields; only its owner may.
    fn update_project(&self, id: i64, owner: i64, patch: ProjectPatch, now: i64) -> StoreFuture<'_, Project>;
    /// Counts for the stats summary.
    fn stats(&self) -> StoreFuture<'_, Stats>;

    /// Queues a deploy of a project the user owns.
    fn create_deploy(&self, user: i64, input: NewDeploy, now: i64) -> StoreFuture<'_, Deploy>;
    /// One deploy job.
    fn get_deploy(&self, id: i64) -> StoreFuture<'_, Option<Deploy>>;
    /// Atomically moves the oldest queued deploy to `running` and returns it;
    /// two workers (on two instances) never claim the same job.
    fn claim_deploy(&self, now: i64) -> StoreFuture<'_, Option<Deploy>>;
    /// Records the end of a running deploy.
    fn finish_deploy(&self, id: i64, status: DeployStatus, message: String, now: i64) -> StoreFuture<'_, Deploy>;
    /// Marks deploys left `running` since before `started_before` (their worker
    /// died) as failed; returns how many.
    fn fail_stale_deploys(&self, started_before: i64, now: i64) -> StoreFuture<'_, u64>;
}

/// Why a [`Store`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No row with that id.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The row belongs to another user.
    #[error("{0} belongs to another user")]
    Forbidden(&'static str),
    /// The change conflicts with the current state (e.g. a blueprint still in use).
    #[error("{0}")]
    Conflict(String),
    /// The input refers to something that does not exist.
    #[error("{field}: {message}")]
    Invalid {
        /// The input field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No connection could be had in time, or the database is down.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Errors from starting a store (connecting, migrating, seeding).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct StartError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StartError {
    pub(crate) fn new(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { context: context.into(), source: source.into() }
    }
}
