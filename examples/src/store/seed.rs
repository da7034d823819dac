//! Realistic seed data for an empty database: users, blueprints, projects and
//! a deploy history. The rows are the same on every run (a fixed random seed);
//! only the users' token secrets are fresh random values.

use super::model::{CATEGORIES, ENVIRONMENTS, PROJECT_STATUSES, REGIONS};
use super::{StartError, model::DeployStatus};

pub(crate) struct SeedUser {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) secret: String,
}

pub(crate) struct SeedBlueprint {
    pub(crate) id: i64,
    pub(crate) owner_id: i64,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) category: &'static str,
    pub(crate) tags: String,
    pub(crate) created_at: i64,
}

pub(crate) struct SeedProject {
    pub(crate) id: i64,
    pub(crate) owner_id: i64,
    pub(crate) blueprint_id: i64,
    pub(crate) name: String,
    pub(crate) status: &'static str,
    pub(crate) region: &'static str,
    pub(crate) created_at: i64,
}

pub(crate) struct SeedDeploy {
    pub(crate) id: i64,
    pub(crate) project_id: i64,
    pub(crate) user_id: i64,
    pub(crate) environment: &'static str,
    pub(crate) status: DeployStatus,
    pub(crate) message: &'static str,
    pub(crate) created_at: i64,
}

pub(crate) struct SeedData {
    pub(crate) users: Vec<SeedUser>,
    pub(crate) blueprints: Vec<SeedBlueprint>,
    pub(crate) projects: Vec<SeedProject>,
    pub(crate) deploys: Vec<SeedDeploy>,
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Ken", "Margaret", "Dennis", "Radia", "Linus", "Sophie",
    "Donald", "Hedy", "John", "Karen",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Liskov",
    "Dijkstra",
    "Allen",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Perlman",
    "Torvalds",
    "Wilson",
    "Knuth",
    "Lamarr",
    "Backus",
    "Sparck Jones",
];
const ADJECTIVES: &[&str] = &[
    "Resilient",
    "Minimal",
    "Serverless",
    "Observable",
    "Hardened",
    "Autoscaling",
    "Multi-region",
    "Event-driven",
    "Cached",
    "Streaming",
    "Batch",
    "Zero-downtime",
];
const STACKS: &[(&str, &[&str])] = &[
    ("web", &["Axum web app", "Next.js storefront", "Rails monolith", "Django CMS", "Phoenix LiveView app"]),
    ("api", &["REST API", "GraphQL gateway", "gRPC service", "Webhook receiver", "Auth service"]),
    ("worker", &["Queue worker", "Image resizer", "Email sender", "PDF renderer", "Video transcoder"]),
    ("data", &["ETL pipeline", "Kafka consumer", "CDC replicator", "Parquet exporter", "Metrics rollup"]),
    ("ml", &["Inference server", "Feature store", "Embedding indexer", "Training job", "Model registry"]),
    ("static-site", &["Docs site", "Marketing site", "Blog", "Status page", "Landing page"]),
    ("cron", &["Nightly backup", "Report mailer", "Cache warmer", "Certificate renewer", "Log compactor"]),
    ("database", &["PostgreSQL primary", "Redis cache", "ClickHouse cluster", "PgBouncer pool", "SQLite replica"]),
];
const TAGS: &[&str] = &[
    "rust",
    "tokio",
    "postgres",
    "redis",
    "docker",
    "kubernetes",
    "terraform",
    "prometheus",
    "grafana",
    "nginx",
    "python",
    "typescript",
    "go",
    "s3",
    "kafka",
    "tls",
    "oauth",
    "websocket",
    "grpc",
    "graphql",
];
const PROJECT_WORDS: &[&str] = &[
    "atlas", "beacon", "comet", "delta", "ember", "falcon", "granite", "harbor", "iris", "juniper", "kepler", "lumen",
    "meridian", "nova", "orbit", "prism", "quartz", "raven", "summit", "tundra",
];
const DEPLOY_MESSAGES: &[&str] =
    &["deployed in 41s", "deployed in 1m 12s", "health check failed: readiness probe timed out", "deployed in 27s"];

/// `blueprints` blueprints (and users, projects and deploys in proportion), ending at `now`.
pub(crate) fn generate(blueprints: usize, now: i64) -> Result<SeedData, StartError> {
    let mut rng = fastrand::Rng::with_seed(0x0b1e_5eed);
    let user_count = 24_i64;
    let start = now - 400 * 86_400;
    let mut users = Vec::new();
    for id in 1..=user_count {
        let first = FIRST[(id as usize - 1) % FIRST.len()];
        // Distinct (first, last) pairs for up to 16 × 16 users.
        let i = id as usize - 1;
        let last = LAST[(i + (i / FIRST.len()) * 3) % LAST.len()];
        let secret =
            crate::secret::random_hex(16).map_err(|e| StartError::new("reading random bytes for tokens", e))?;
        users.push(SeedUser {
            id,
            name: format!("{first} {last}"),
            email: format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase().replace(' ', "-")),
            secret,
        });
    }
    let mut seeded_blueprints = Vec::with_capacity(blueprints);
    for i in 0..blueprints {
        let id = i as i64 + 1;
        let (category, kinds) = STACKS[rng.usize(..STACKS.len())];
        let kind = kinds[rng.usize(..kinds.len())];
        let adjective = ADJECTIVES[rng.usize(..ADJECTIVES.len())];
        let mut tags: Vec<&str> = (0..rng.usize(1..=4)).map(|_| TAGS[rng.usize(..TAGS.len())]).collect();
        tags.sort_unstable();
        tags.dedup();
        seeded_blueprints.push(SeedBlueprint {
            id,
            owner_id: rng.i64(1..=user_count),
            name: format!("{adjective} {kind} #{id}"),
            description: format!(
                "A {} {} blueprint: {} with health checks, structured logs and a rollback plan.",
                adjective.to_lowercase(),
                category,
                kind.to_lowercase()
            ),
            category,
            tags: serde_json::to_string(&tags).expect("a list of strings serializes"),
            created_at: start + (i as i64) * (300 * 86_400 / blueprints.max(1) as i64),
        });
    }
    debug_assert!(CATEGORIES.iter().all(|c| STACKS.iter().any(|(s, _)| s == c)));
    let project_count = if blueprints == 0 { 0 } else { (blueprints / 4).max(1) };
    let mut projects = Vec::with_capacity(project_count);
    for i in 0..project_count {
        let id = i as i64 + 1;
        let blueprint = &seeded_blueprints[rng.usize(..seeded_blueprints.len())];
        let status = match rng.u8(..10) {
            0 => PROJECT_STATUSES[2],
            1 | 2 => PROJECT_STATUSES[1],
            _ => PROJECT_STATUSES[0],
        };
        projects.push(SeedProject {
            id,
            owner_id: rng.i64(1..=user_count),
            blueprint_id: blueprint.id,
            name: format!(
                "{}-{}-{id}",
                PROJECT_WORDS[rng.usize(..PROJECT_WORDS.len())],
                PROJECT_WORDS[rng.usize(..PROJECT_WORDS.len())]
            ),
            status,
            region: REGIONS[rng.usize(..REGIONS.len())],
            created_at: blueprint.created_at + rng.i64(3_600..30 * 86_400),
        });
    }
    let mut deploys = Vec::new();
    for (i, project) in projects.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let message = DEPLOY_MESSAGES[rng.usize(..DEPLOY_MESSAGES.len())];
        deploys.push(SeedDeploy {
            id: deploys.len() as i64 + 1,
            project_id: project.id,
            user_id: project.owner_id,
            environment: ENVIRONMENTS[i % ENVIRONMENTS.len()],
            status: if message.starts_with("deployed") { DeployStatus::Succeeded } else { DeployStatus::Failed },
            message,
            created_at: project.created_at + rng.i64(60..86_400),
        });
    }
    Ok(SeedData { users, blueprints: seeded_blueprints, projects, deploys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rows_are_consistent() {
        let data = generate(1200, 1_800_000_000).unwrap();
        assert_eq!(data.blueprints.len(), 1200);
        assert_eq!(data.projects.len(), 300);
        assert!(!data.deploys.is_empty());
        let users = data.users.len() as i64;
        assert!(data.blueprints.iter().all(|b| (1..=users).contains(&b.owner_id)));
        assert!(data.projects.iter().all(|p| (1..=1200).contains(&p.blueprint_id) && p.created_at < 1_800_000_000));
        assert!(data.deploys.iter().all(|d| (1..=300).contains(&d.project_id)));
        let emails: std::collections::HashSet<_> = data.users.iter().map(|u| &u.email).collect();
        assert_eq!(emails.len(), data.users.len(), "user emails are unique");
        let names: std::collections::HashSet<_> = data.blueprints.iter().map(|b| &b.name).collect();
        assert_eq!(names.len(), 1200, "blueprint names are unique");
    }
}
