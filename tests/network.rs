//! An agent cut off from the network for longer than its lease, in a network namespace of
//! its own, then reconnected: its work is done by others in the meantime, and nothing it
//! renders is merged twice.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use fleet_protocol::JobState;
use support::farm::Farm;
use support::jobs::submit_frame;
use support::reference::assert_frame_matches_reference;
use support::{assert_tiled_once, TestDir};

/// A network namespace joined to this one by a veth pair.
struct Namespace {
    name: String,
    host_link: String,
    host_address: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

impl Namespace {
    /// Creates the namespace, or says why it cannot (not root, no `ip`).
    fn create() -> Option<Self> {
        let id = std::process::id() % 200 + 20;
        let name = format!("bf-test-{id}");
        let host_link = format!("bfh{id}");
        let agent_link = format!("bfa{id}");
        let host_address = format!("10.231.{id}.1");
        let created = ip(&["netns", "add", &name])
            && ip(&[
                "link",
                "add",
                &host_link,
                "type",
                "veth",
                "peer",
                "name",
                &agent_link,
            ])
            && ip(&["link", "set", &agent_link, "netns", &name])
            && ip(&[
                "addr",
                "add",
                &format!("{host_address}/30"),
                "dev",
                &host_link,
            ])
            && ip(&["link", "set", &host_link, "up"])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("10.231.{id}.2/30"),
                "dev",
                &agent_link,
            ])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "link",
                "set",
                &agent_link,
                "up",
            ])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let namespace = Self {
            name,
            host_link,
            host_address,
        };
        if created {
            Some(namespace)
        } else {
            let in_ci =
                std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
            assert!(
                !in_ci,
                "CI must be able to create network namespaces (run as root)"
            );
            eprintln!("SKIPPED: cannot create a network namespace here (needs root and iproute2)");
            None
        }
    }

    fn cut(&self) {
        assert!(ip(&["link", "set", &self.host_link, "down"]));
    }

    fn restore(&self) {
        assert!(ip(&["link", "set", &self.host_link, "up"]));
    }

    fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_link]);
        ip(&["netns", "del", &self.name]);
    }
}

#[tokio::test]
async fn an_agent_cut_off_past_its_lease_is_replaced_and_counted_once() {
    let Some(blender) = support::blender_34() else {
        return;
    };
    let Some(namespace) = Namespace::create() else {
        return;
    };
    let dir = TestDir::new();
    let blend = support::demo_scene(&blender, dir.path()).await;
    let mut farm = Farm::start_on(dir.path(), 3, &namespace.host_address);
    let pieces = ["--piece-seconds", "1"];
    farm.add_agent_via("isolated", &blender, &pieces, &namespace.wrapper())
        .await;
    farm.add_agent("connected", &blender, &pieces).await;
    farm.wait_for_agents(2).await;
    let client = farm.client();

    let samples = 192;
    let job = submit_frame(&client, &blend, samples, (160, 120)).await;

    // Cut the isolated agent off while it holds a lease.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = client.job(job).await.unwrap();
        if status.agents.contains(&"isolated".to_owned()) {
            break;
        }
        assert!(
            !status.summary.state.is_final() && Instant::now() < deadline,
            "{status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    namespace.cut();
    tokio::time::sleep(Duration::from_secs(8)).await;
    namespace.restore();

    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let status = client.job(job).await.unwrap();
        if status.summary.state.is_final() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert_eq!(status.summary.samples_done, u64::from(samples));

    let db = farm.state.join("state.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    let expired: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM leases l JOIN agents a ON a.id = l.agent_id
             WHERE a.name = 'isolated' AND l.state = 'expired'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(expired >= 1, "the cut-off agent's lease lapsed");
    assert_tiled_once(&db, samples);
    // The isolated agent came back and is still part of the farm.
    assert!(
        farm.agent("isolated").try_wait().unwrap().is_none(),
        "the agent survived the cut"
    );
    let log = farm.log("isolated");
    assert!(
        log.contains("no longer ours") || log.contains("lease"),
        "{log}"
    );

    assert_frame_matches_reference(
        &client,
        job,
        &blender,
        &blend,
        samples,
        (160, 120),
        dir.path(),
    )
    .await;
}
