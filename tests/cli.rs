//! The command line's own errors: clear messages and a failing exit status, no Blender needed.

#![allow(clippy::unwrap_used)]

mod support;

use support::blendfleet;

fn fails_with(args: &[&str], envs: &[(&str, &str)], expected: &str) {
    let mut command = blendfleet();
    command.args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(expected),
        "{args:?}: expected `{expected}` in:\n{stderr}"
    );
}

#[test]
fn a_missing_blend_file_is_named() {
    fails_with(
        &[
            "render",
            "/nonexistent/shot.blend",
            "--samples",
            "4",
            "--frames",
            "1",
        ],
        &[],
        "/nonexistent/shot.blend",
    );
}

#[test]
fn an_agent_without_a_join_credential_says_how_to_get_one() {
    fails_with(
        &[
            "agent",
            "--manager",
            "https://127.0.0.1:1",
            "--ca-fingerprint",
            &"ab".repeat(32),
        ],
        &[],
        "BLENDFLEET_JOIN_TOKEN",
    );
}

#[test]
fn remote_commands_without_a_manager_say_how_to_configure_one() {
    fails_with(&["jobs"], &[], "no manager configured");
    fails_with(
        &["status", "3", "--manager", "https://h:1"],
        &[("BLENDFLEET_PASSWORD", "x")],
        "#ca=",
    );
    fails_with(
        &[
            "jobs",
            "--manager",
            &format!("https://admin@127.0.0.1:9/#ca=sha256:{}", "ab".repeat(32)),
        ],
        &[],
        "BLENDFLEET_PASSWORD",
    );
}

#[test]
fn an_unreachable_manager_is_reported_as_such() {
    fails_with(
        &[
            "jobs",
            "--manager",
            &format!("https://admin@127.0.0.1:9/#ca=sha256:{}", "ab".repeat(32)),
        ],
        &[("BLENDFLEET_PASSWORD", "x")],
        "cannot reach the manager",
    );
}

#[test]
fn bad_fingerprints_and_frame_ranges_are_explained() {
    fails_with(
        &[
            "agent",
            "--manager",
            "https://h:1",
            "--ca-fingerprint",
            "nope",
        ],
        &[],
        "fingerprint",
    );
    fails_with(
        &["render", "x.blend", "--frames", "3-x"],
        &[],
        "frame range",
    );
}

#[test]
fn ca_show_without_state_says_to_start_the_manager() {
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        &["ca", "show", "--state-dir", dir.path().to_str().unwrap()],
        &[],
        "start `blendfleet manager`",
    );
}
