//! `blendfleet cloud`: configuration errors and the saved connection without a cloud; with
//! the `aws` feature, `up`, `status` and `down` against moto_server.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn blendfleet(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blendfleet"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("BLENDFLEET_CLOUD_CONFIG")
        .env_remove("BLENDFLEET_MANAGER")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn config_mistakes_are_named() {
    let home = tempfile::tempdir().unwrap();
    let output = blendfleet(home.path(), &["cloud", "status"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no cloud config at"),
        "{}",
        stderr(&output)
    );

    let config = home.path().join("cloud.toml");
    std::fs::write(&config, "provider = \"aws\"\nfarm = \"f\"\n[aws]\nregion = \"us-east-1\"\nzones = []\nami = \"ami-1\"\n").unwrap();
    let output = blendfleet(
        home.path(),
        &["cloud", "down", "--config", config.to_str().unwrap()],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("aws.zones is empty"),
        "{}",
        stderr(&output)
    );

    std::fs::write(&config, "provider = \"azure\"\nfarm = \"f\"\n").unwrap();
    let output = blendfleet(
        home.path(),
        &["cloud", "status", "--config", config.to_str().unwrap()],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("provider"), "{}", stderr(&output));
}

#[test]
fn connection_prints_what_up_saved_or_says_to_run_up() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("cloud.toml");
    std::fs::write(
        &config,
        "provider = \"aws\"\nfarm = \"studio\"\n[aws]\nregion = \"us-east-1\"\nzones = [\"us-east-1a\"]\nami = \"ami-1\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let output = blendfleet(home.path(), &["cloud", "connection", "--config", config]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("farm `studio` has no saved manager connection")
            && stderr(&output).contains("blendfleet cloud up"),
        "{}",
        stderr(&output)
    );

    // What `cloud up` writes once the manager's fingerprint is known.
    let connection = "https://admin@203.0.113.9:8443/#ca=sha256:".to_owned() + &"ab".repeat(32);
    let saved = home.path().join("config/blendfleet/cloud/studio.toml");
    std::fs::create_dir_all(saved.parent().unwrap()).unwrap();
    std::fs::write(
        &saved,
        format!(
            "farm = \"studio\"\nprovider = \"aws\"\ninstance_id = \"i-1\"\ninstance_name = \"studio-manager\"\nzone = \"us-east-1a\"\nurl = \"https://203.0.113.9:8443\"\nuser = \"admin\"\npassword = \"s3cret\"\nca_fingerprint = \"sha256:{}\"\nconnection = \"{connection}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let output = blendfleet(
        home.path(),
        &["cloud", "connection", "--config", config, "--json"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["connection"], connection.as_str());
    assert_eq!(value["password"], "s3cret");
    assert_eq!(value["farm"], "studio");
    // The text form leaves the password in the file.
    let output = blendfleet(home.path(), &["cloud", "connection", "--config", config]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&connection), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[cfg(not(feature = "gcp"))]
#[test]
fn a_build_without_the_provider_says_how_to_get_it() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("cloud.toml");
    std::fs::write(
        &config,
        "provider = \"gcp\"\nfarm = \"f\"\n[gcp]\nproject = \"p\"\nzones = [\"z\"]\n",
    )
    .unwrap();
    let output = blendfleet(
        home.path(),
        &["cloud", "status", "--config", config.to_str().unwrap()],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--features aws,gcp"),
        "{}",
        stderr(&output)
    );
}

#[cfg(feature = "aws")]
mod aws {
    use std::collections::BTreeMap;

    use base64::Engine;
    use fleet_cloud::aws::AwsProvider;
    use fleet_cloud::testing::MotoServer;
    use fleet_cloud::{InstanceRequest, Provider, Role};

    use super::*;

    #[tokio::test]
    async fn up_sends_only_a_password_hash_status_lists_down_sweeps() {
        let moto = MotoServer::start().await;
        let home = tempfile::tempdir().unwrap();
        let ami = moto.image_id().await;
        let config = home.path().join("cloud.toml");
        std::fs::write(
            &config,
            format!(
                "provider = \"aws\"\nfarm = \"clifarm\"\n[aws]\nregion = \"us-east-1\"\nzones = [\"us-east-1a\"]\nami = \"{ami}\"\nendpoint_url = \"{}\"\n",
                moto.url
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let scripts = home.path().join("scripts");
        std::fs::create_dir(&scripts).unwrap();
        std::fs::write(
            scripts.join("manager-startup.sh"),
            "#!/bin/bash\necho manager\n",
        )
        .unwrap();
        std::fs::write(
            scripts.join("agent-startup.sh"),
            "#!/bin/bash\necho agent\n",
        )
        .unwrap();

        // moto's console output never carries a fingerprint: `up` gives up, and says the
        // instance is still running. With --json, progress goes to stderr and nothing but
        // a result would go to stdout.
        let output = blendfleet(
            home.path(),
            &[
                "cloud",
                "up",
                "--config",
                config,
                "--scripts",
                scripts.to_str().unwrap(),
                "--wait-minutes",
                "0",
                "--json",
            ],
        );
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("did not publish its CA fingerprint"),
            "{}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("started manager clifarm-manager"),
            "{}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{output:?}");
        let output = blendfleet(home.path(), &["cloud", "connection", "--config", config]);
        assert!(
            stderr(&output).contains("no saved manager connection"),
            "{}",
            stderr(&output)
        );

        let aws = AwsProvider::new(moto.aws_settings(&["us-east-1a"], &ami), 8443, vec![]).await;
        let listed = aws.list("clifarm").await.unwrap();
        assert_eq!(listed.len(), 1);
        let manager = &listed[0];
        assert_eq!(manager.role, Some(Role::Manager));
        assert!(!manager.spot, "the manager is on-demand");
        let attribute = aws
            .client()
            .describe_instance_attribute()
            .instance_id(&manager.id)
            .attribute("userData".into())
            .send()
            .await
            .unwrap();
        let user_data = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(attribute.user_data().unwrap().value().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(
            user_data.contains("export BLENDFLEET_PASSWORD_HASH='$argon2id$"),
            "{user_data}"
        );
        assert!(
            !user_data.contains("BLENDFLEET_PASSWORD="),
            "no password in the user data"
        );
        assert!(user_data.ends_with("echo manager\n"));
        assert!(
            user_data
                .contains("export BLENDFLEET_MANAGER_ARGS='--cloud-config-from-metadata aws'\n"),
            "{user_data}"
        );
        assert!(
            user_data.contains("export BLENDFLEET_CLOUD_CONFIG='"),
            "{user_data}"
        );
        // A second `up` refuses: the farm has a manager.
        let output = blendfleet(
            home.path(),
            &[
                "cloud",
                "up",
                "--config",
                config,
                "--scripts",
                scripts.to_str().unwrap(),
            ],
        );
        assert!(
            stderr(&output).contains("already has a manager"),
            "{}",
            stderr(&output)
        );

        // An agent the manager would have started.
        aws.create(
            "us-east-1a",
            &InstanceRequest {
                farm: "clifarm".into(),
                name: "clifarm-agent-1".into(),
                role: Role::Agent,
                machine_type: "c6i.large".into(),
                spot: true,
                startup_script: "#!/bin/bash\n".into(),
                settings: BTreeMap::new(),
            },
        )
        .await
        .unwrap();
        let output = blendfleet(
            home.path(),
            &["cloud", "status", "--config", config, "--json"],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(status["instances"].as_array().unwrap().len(), 2, "{status}");

        let output = blendfleet(home.path(), &["cloud", "down", "--config", config]);
        assert!(output.status.success(), "{}", stderr(&output));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("terminated clifarm-manager"), "{text}");
        assert!(text.contains("terminated clifarm-agent-1"), "{text}");
        assert!(text.contains("2 instances terminated"), "{text}");
        assert!(aws.list("clifarm").await.unwrap().is_empty());
    }
}
