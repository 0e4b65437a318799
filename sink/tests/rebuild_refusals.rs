//! What `sink rebuild` (the built binary) refuses to do, with a clear reason and the live
//! state untouched: build into the live database, build into a database Redis does not have,
//! and build when `maxmemory` cannot hold both states (unless `--force`).
//!
//! The memory test changes the server's `maxmemory` for about a second (and restores it);
//! it is the only test of this binary that writes while the limit is low.

mod rebuild_support;

use std::process::Stdio;
use std::time::Duration;

use rebuild_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_the_live_database_and_missing_databases() {
    let world = World::new(1, &[]).await;
    let dbs = take_dbs(&world.stack, 1);
    let live = dbs[0];
    let config = world.write_config("live", &world.yaml(live, &format!("r{}-live", world.id)));

    let out = rebuild(
        &config,
        &["--staging-db", &live.to_string()],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the staging database {live} is the live database")),
        "{stderr}"
    );

    let out = rebuild(&config, &["--staging-db", "999"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the staging database 999 does not exist"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_when_two_states_do_not_fit_unless_forced() {
    let world = World::new(1, &[]).await;
    let dbs = take_dbs(&world.stack, 2);
    let (live, staging) = (dbs[0], dbs[1]);
    world.produce(&world.workload(3_000, 1_000)).await;
    world.clean_build(live, DEFAULT_MAPPINGS).await;
    let before = snapshot(&world.stack, live, false);
    let config = world.write_config("live", &world.yaml(live, &format!("r{}-live", world.id)));
    let staging_arg = staging.to_string();

    let mut admin = world.stack.conn(0);
    let saved: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut admin)
        .unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut admin).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let set_max = |conn: &mut redis::Connection, v: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(v)
            .query(conn)
            .unwrap();
    };

    // Just above what is used: the new state cannot fit.
    set_max(&mut admin, &(used + 512 * 1024).to_string());
    let refused = rebuild(
        &config,
        &["--staging-db", &staging_arg],
        Duration::from_secs(60),
    );
    set_max(&mut admin, &saved[1]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not enough redis memory for the old and the new state"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert_same(
        &snapshot(&world.stack, live, false),
        &before,
        "live state after the refusal",
    );

    // --force: warns and goes on (the limit is lifted again right after the check).
    set_max(&mut admin, &(used + 512 * 1024).to_string());
    let child = sink(&[
        "rebuild",
        "--config",
        config.to_str().unwrap(),
        "--staging-db",
        &staging_arg,
        "--force",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    set_max(&mut admin, &saved[1]);
    let out = wait_output(child, Duration::from_secs(120));
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("going on (--force)"), "{stderr}");
    assert_same(
        &snapshot(&world.stack, live, false),
        &before,
        "state after the forced rebuild",
    );
}
