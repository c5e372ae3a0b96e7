//! Filling a task spec's `files` from the hashes of the project files.

use std::collections::BTreeMap;

use fleet_protocol::BlobHash;
use serde_json::Value;

/// Why a spec given by the caller cannot be completed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecShapeError {
    #[error("the job spec must be a JSON object (a dict), not {0}")]
    NotAnObject(&'static str),
    #[error(
        "the job spec must not contain \"files\": pass the project files as the `files` argument \
         and they are filled in from their hashes"
    )]
    HasFiles,
}

/// Returns `spec` with `files` set to the job path → content hash map. Everything else is
/// left for the manager to judge.
pub fn fill_files(
    spec: Value,
    files: &BTreeMap<String, BlobHash>,
) -> Result<Value, SpecShapeError> {
    let mut object = match spec {
        Value::Object(object) => object,
        other => return Err(SpecShapeError::NotAnObject(json_type(&other))),
    };
    if object.contains_key("files") {
        return Err(SpecShapeError::HasFiles);
    }
    let files = files
        .iter()
        .map(|(path, hash)| (path.clone(), Value::String(hash.as_str().to_owned())))
        .collect();
    object.insert("files".into(), Value::Object(files));
    Ok(Value::Object(object))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hash(byte: u8) -> BlobHash {
        BlobHash::from_digest(&[byte; 32])
    }

    #[test]
    fn files_are_added_and_the_rest_is_kept() {
        let files = BTreeMap::from([
            ("scene.blend".to_owned(), hash(1)),
            ("tex/wood.png".to_owned(), hash(2)),
        ]);
        let spec = json!({"main_file": "scene.blend", "frames": {"start": 1, "end": 1}, "samples": 8,
                          "unknown_field": true});
        let filled = fill_files(spec, &files).unwrap();
        assert_eq!(filled["files"]["scene.blend"], "01".repeat(32));
        assert_eq!(filled["files"]["tex/wood.png"], "02".repeat(32));
        assert_eq!(filled["samples"], 8);
        // Unknown fields travel unchanged: refusing them is the manager's decision.
        assert_eq!(filled["unknown_field"], true);
    }

    #[test]
    fn the_filled_spec_parses_as_a_job_spec() {
        let files = BTreeMap::from([("a.blend".to_owned(), hash(7))]);
        let spec = json!({"main_file": "a.blend", "frames": {"start": 1, "end": 3}, "samples": 4});
        let filled = fill_files(spec, &files).unwrap();
        let parsed: fleet_protocol::JobSpec = serde_json::from_value(filled).unwrap();
        assert_eq!(parsed.files["a.blend"], hash(7));
        parsed.validate().unwrap();
    }

    #[test]
    fn shapes_that_cannot_be_filled() {
        let files = BTreeMap::new();
        assert_eq!(
            fill_files(json!([1, 2]), &files).unwrap_err(),
            SpecShapeError::NotAnObject("a list")
        );
        let error = fill_files(json!({"files": {}}), &files).unwrap_err();
        assert_eq!(error, SpecShapeError::HasFiles);
        assert!(error.to_string().contains("`files` argument"));
    }
}
