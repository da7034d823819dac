//! JSON views of the rows.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::store::{Blueprint, Deploy, Owner, Project};

/// Every field a blueprint response may show, in output order (the `?fields=` allow-list).
pub(crate) const BLUEPRINT_FIELDS: &[&str] =
    &["id", "name", "description", "category", "tags", "version", "owner_id", "owner", "created_at", "updated_at"];
/// Every field a project response may show (the `?fields=` allow-list).
pub(crate) const PROJECT_FIELDS: &[&str] =
    &["id", "name", "status", "region", "blueprint_id", "owner_id", "created_at", "updated_at"];

/// Unix seconds as RFC 3339 (`2026-01-02T03:04:05Z`).
pub(crate) fn timestamp(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

pub(crate) fn blueprint(b: &Blueprint, owners: &HashMap<i64, Owner>) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("id".into(), json!(b.id));
    map.insert("name".into(), json!(b.name));
    map.insert("description".into(), json!(b.description));
    map.insert("category".into(), json!(b.category));
    map.insert("tags".into(), json!(b.tags));
    map.insert("version".into(), json!(b.version));
    map.insert("owner_id".into(), json!(b.owner_id));
    map.insert("owner".into(), owners.get(&b.owner_id).map_or(Value::Null, |o| json!(o)));
    map.insert("created_at".into(), json!(timestamp(b.created_at)));
    map.insert("updated_at".into(), json!(timestamp(b.updated_at)));
    map
}

pub(crate) fn project(p: &Project) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("id".into(), json!(p.id));
    map.insert("name".into(), json!(p.name));
    map.insert("status".into(), json!(p.status));
    map.insert("region".into(), json!(p.region));
    map.insert("blueprint_id".into(), json!(p.blueprint_id));
    map.insert("owner_id".into(), json!(p.owner_id));
    map.insert("created_at".into(), json!(timestamp(p.created_at)));
    map.insert("updated_at".into(), json!(timestamp(p.updated_at)));
    map
}

pub(crate) fn deploy(d: &Deploy) -> Value {
    json!({
        "id": d.id,
        "project_id": d.project_id,
        "user_id": d.user_id,
        "environment": d.environment,
        "status": d.status.as_str(),
        "message": d.message,
        "created_at": timestamp(d.created_at),
        "started_at": d.started_at.map(timestamp),
        "finished_at": d.finished_at.map(timestamp),
        "links": { "self": format!("/api/deploy/{}", d.id) },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(super::timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::timestamp(-5), "1970-01-01T00:00:00Z");
    }
}
