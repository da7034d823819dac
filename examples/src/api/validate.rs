//! Request bodies and their checks. Unknown members are refused
//! (`deny_unknown_fields`), so a typo never silently does nothing.

use serde::Deserialize;

use super::problem::{FieldError, Problem};
use crate::store::{
    BlueprintInput, CATEGORIES, ENVIRONMENTS, NewDeploy, NewProject, PROJECT_STATUSES, ProjectPatch, REGIONS,
};

/// `POST /api/blueprints` and `PUT /api/blueprints/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlueprintBody {
    name: String,
    #[serde(default)]
    description: String,
    category: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// `POST /api/projects`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectBody {
    name: String,
    blueprint_id: i64,
    region: String,
}

/// `PATCH /api/projects/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectPatchBody {
    name: Option<String>,
    status: Option<String>,
    region: Option<String>,
}

/// `POST /api/deploy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployBody {
    project_id: i64,
    #[serde(default = "default_environment")]
    environment: String,
}

fn default_environment() -> String {
    "staging".to_owned()
}

fn text(errors: &mut Vec<FieldError>, field: &str, value: &str, min: usize, max: usize) -> String {
    let value = value.trim();
    let chars = value.chars().count();
    if chars < min || chars > max {
        errors.push(FieldError::new(format!("/{field}"), format!("must be {min} to {max} characters, not {chars}")));
    } else if value.chars().any(char::is_control) {
        errors.push(FieldError::new(format!("/{field}"), "must not contain control characters"));
    }
    value.to_owned()
}

fn one_of(errors: &mut Vec<FieldError>, field: &str, value: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        errors.push(FieldError::new(format!("/{field}"), format!("must be one of: {}", allowed.join(", "))));
    }
}

/// A DNS label: what a project name becomes in its URL.
fn dns_label(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    let ok = (3..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        errors.push(FieldError::new(
            format!("/{field}"),
            "must be 3 to 63 lowercase letters, digits or '-', not starting or ending with '-'",
        ));
    }
}

fn positive(errors: &mut Vec<FieldError>, field: &str, value: i64) {
    if value <= 0 {
        errors.push(FieldError::new(format!("/{field}"), "must be a positive id"));
    }
}

fn finish<T>(errors: Vec<FieldError>, value: T) -> Result<T, Problem> {
    if errors.is_empty() { Ok(value) } else { Err(Problem::invalid(errors)) }
}

impl BlueprintBody {
    pub(crate) fn validate(self) -> Result<BlueprintInput, Problem> {
        let mut errors = Vec::new();
        let name = text(&mut errors, "name", &self.name, 1, 100);
        let description = text(&mut errors, "description", &self.description, 0, 2000);
        one_of(&mut errors, "category", &self.category, CATEGORIES);
        if self.tags.len() > 10 {
            errors.push(FieldError::new("/tags", format!("at most 10 tags, not {}", self.tags.len())));
        }
        let mut tags = Vec::with_capacity(self.tags.len());
        for (i, tag) in self.tags.iter().enumerate() {
            let ok = (1..=32).contains(&tag.len())
                && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                errors.push(FieldError::new(format!("/tags/{i}"), "must be 1 to 32 lowercase letters, digits or '-'"));
            } else if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        finish(errors, BlueprintInput { name, description, category: self.category, tags })
    }
}

impl ProjectBody {
    pub(crate) fn validate(self) -> Result<NewProject, Problem> {
        let mut errors = Vec::new();
        dns_label(&mut errors, "name", &self.name);
        positive(&mut errors, "blueprint_id", self.blueprint_id);
        one_of(&mut errors, "region", &self.region, REGIONS);
        finish(errors, NewProject { name: self.name, blueprint_id: self.blueprint_id, region: self.region })
    }
}

impl ProjectPatchBody {
    pub(crate) fn validate(self) -> Result<ProjectPatch, Problem> {
        let mut errors = Vec::new();
        if self.name.is_none() && self.status.is_none() && self.region.is_none() {
            errors.push(FieldError::new("", "give at least one of: name, status, region"));
        }
        if let Some(name) = &self.name {
            dns_label(&mut errors, "name", name);
        }
        if let Some(status) = &self.status {
            one_of(&mut errors, "status", status, PROJECT_STATUSES);
        }
        if let Some(region) = &self.region {
            one_of(&mut errors, "region", region, REGIONS);
        }
        finish(errors, ProjectPatch { name: self.name, status: self.status, region: self.region })
    }
}

impl DeployBody {
    pub(crate) fn validate(self) -> Result<NewDeploy, Problem> {
        let mut errors = Vec::new();
        positive(&mut errors, "project_id", self.project_id);
        one_of(&mut errors, "environment", &self.environment, ENVIRONMENTS);
        finish(errors, NewDeploy { project_id: self.project_id, environment: self.environment })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blueprint(json: &str) -> Result<BlueprintInput, Problem> {
        serde_json::from_str::<BlueprintBody>(json).unwrap().validate()
    }

    #[test]
    fn a_good_blueprint_is_trimmed_and_its_tags_deduplicated() {
        let input = blueprint(r#"{"name":"  API  ","category":"api","tags":["rust","rust","tokio"]}"#).unwrap();
        assert_eq!(input.name, "API");
        assert_eq!(input.tags, ["rust", "tokio"]);
    }

    #[test]
    fn every_bad_field_is_listed() {
        let problem = blueprint(r#"{"name":"","category":"games","tags":["Bad Tag"]}"#).unwrap_err();
        assert_eq!(problem.status(), 422);
        let response = axum::response::IntoResponse::into_response(problem);
        assert_eq!(response.status(), 422);
    }

    #[test]
    fn unknown_members_are_refused() {
        assert!(serde_json::from_str::<BlueprintBody>(r#"{"name":"a","category":"api","owner_id":1}"#).is_err());
        assert!(serde_json::from_str::<ProjectPatchBody>(r#"{"colour":"red"}"#).is_err());
    }

    #[test]
    fn project_names_are_dns_labels() {
        let patch = |name: &str| ProjectPatchBody { name: Some(name.into()), status: None, region: None }.validate();
        assert!(patch("atlas-1").is_ok());
        for bad in ["ab", "-atlas", "atlas-", "Atlas", "at las", &"a".repeat(64)] {
            assert!(patch(bad).is_err(), "{bad}");
        }
        assert!(ProjectPatchBody { name: None, status: None, region: None }.validate().is_err());
    }
}
