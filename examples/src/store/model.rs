//! The rows the service reads and writes.

use std::collections::BTreeMap;

use serde::Serialize;

/// Blueprint categories accepted on write.
pub const CATEGORIES: &[&str] = &["web", "api", "worker", "data", "ml", "static-site", "cron", "database"];
/// Project regions accepted on write.
pub const REGIONS: &[&str] = &["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1"];
/// Project statuses accepted on write.
pub const PROJECT_STATUSES: &[&str] = &["active", "paused", "archived"];
/// Deploy environments accepted on write.
pub const ENVIRONMENTS: &[&str] = &["staging", "production"];

/// A user's id and API token secret.
#[derive(Clone, PartialEq, Eq)]
pub struct UserToken {
    /// The user id.
    pub user_id: i64,
    /// The user's display name.
    pub name: String,
    /// The secret part of the bearer token (hex).
    pub secret: String,
}

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserToken").field("user_id", &self.user_id).field("secret", &"<redacted>").finish()
    }
}

/// The public view of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// User id.
    pub id: i64,
    /// Display name.
    pub name: String,
}

/// A deployable template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blueprint {
    /// Id.
    pub id: i64,
    /// The user who owns it.
    pub owner_id: i64,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// Labels.
    pub tags: Vec<String>,
    /// Starts at 1, bumped by each update.
    pub version: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// The writable fields of a blueprint (validated before it reaches the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueprintInput {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// Labels.
    pub tags: Vec<String>,
}

/// A project: a blueprint instantiated in a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Id.
    pub id: i64,
    /// The user who owns it.
    pub owner_id: i64,
    /// The blueprint it runs.
    pub blueprint_id: i64,
    /// Name.
    pub name: String,
    /// One of [`PROJECT_STATUSES`].
    pub status: String,
    /// One of [`REGIONS`].
    pub region: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A new project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProject {
    /// Name.
    pub name: String,
    /// The blueprint it runs.
    pub blueprint_id: i64,
    /// One of [`REGIONS`].
    pub region: String,
}

/// A partial update of a project; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectPatch {
    /// New name.
    pub name: Option<String>,
    /// New status.
    pub status: Option<String>,
    /// New region.
    pub region: Option<String>,
}

/// A deploy job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// Done.
    Succeeded,
    /// Ended in failure.
    Failed,
}

impl DeployStatus {
    /// The name stored in the database and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A deploy job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    /// Id.
    pub id: i64,
    /// The project deployed.
    pub project_id: i64,
    /// Who asked for it.
    pub user_id: i64,
    /// One of [`ENVIRONMENTS`].
    pub environment: String,
    /// Where it is.
    pub status: DeployStatus,
    /// A human-readable outcome.
    pub message: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, once running.
    pub started_at: Option<i64>,
    /// Unix seconds, once ended.
    pub finished_at: Option<i64>,
}

/// A deploy request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeploy {
    /// The project to deploy.
    pub project_id: i64,
    /// One of [`ENVIRONMENTS`].
    pub environment: String,
}

/// Counts for `GET /api/projects/stats/summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// All projects.
    pub projects_total: i64,
    /// Projects by status.
    pub projects_by_status: BTreeMap<String, i64>,
    /// Projects by region.
    pub projects_by_region: BTreeMap<String, i64>,
    /// All blueprints.
    pub blueprints_total: i64,
    /// Blueprints by category.
    pub blueprints_by_category: BTreeMap<String, i64>,
    /// Deploys by status.
    pub deploys_by_status: BTreeMap<String, i64>,
}

/// A connection pool's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// The most connections it opens.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Open connections idle now.
    pub available: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}
