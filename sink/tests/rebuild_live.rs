//! `sink rebuild` next to a running `sink run` (both the built binary) while records keep
//! arriving, and rebuilds that are interrupted (SIGTERM, SIGKILL) half-way.

mod rebuild_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rebuild_support::*;
use redis::Commands;
use testkit::loadgen::WireRecord;

/// Changes after the initial workload: email changes, order moves, deletes and re-inserts.
fn round(world: &World, r: i64, customers: i64, lsn: &mut i64) -> Vec<WireRecord> {
    let mut out = Vec::new();
    for k in 0..20 {
        let id = (r * 37 + k * 11) % customers + 1;
        *lsn += 10;
        match (r + k) % 6 {
            0 => {
                out.push(world.customer_delete(id, *lsn));
                out.push(world.tombstone(false, id));
            }
            1 => out.push(world.customer("c", id, &format!("again{id}@example.com"), *lsn)),
            2 => out.push(world.order("u", id, (id + r) % customers + 1, *lsn)),
            3 => {
                out.push(world.order_delete(id + customers, *lsn));
                out.push(world.tombstone(true, id + customers));
            }
            _ => out.push(world.customer("u", id, &format!("r{r}-{id}@example.com"), *lsn)),
        }
    }
    out
}

/// Waits until the `sink:offsets` of `db` reach the end of every partition of the world.
async fn wait_applied_to_end(world: &World, db: i64) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &world.stack.bootstrap)
        .create()
        .expect("consumer");
    let mut ends = Vec::new();
    for topic in [&world.customers.topic, &world.orders.topic] {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        for p in metadata.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            if high > 0 {
                ends.push((format!("{topic}/{}", p.id()), high - 1));
            }
        }
    }
    let mut conn = world.stack.conn(db);
    wait_until(
        "the live sink to apply every record",
        Duration::from_secs(60),
        || {
            let offsets: std::collections::HashMap<String, i64> =
                conn.hgetall("sink:offsets").unwrap();
            ends.iter()
                .all(|(field, last)| offsets.get(field).is_some_and(|o| o >= last))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sink_during_a_rebuild_ends_in_the_clean_state() {
    let world = Arc::new(World::new(2, &[]).await);
    let dbs = take_dbs(&world.stack, 3);
    let (live, staging, reference) = (dbs[0], dbs[1], dbs[2]);
    let customers = 1_500;
    world.produce(&world.workload(customers, 1_000)).await;

    let config = world.write_config("live", &world.yaml(live, &format!("r{}-live", world.id)));
    let path = config.to_str().unwrap().to_owned();
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("rebuild-{}-run.log", world.id)))
            .unwrap();
    let mut run = sink(&["run", "--config", &path])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn sink run");
    wait_applied_to_end(&world, live).await;

    // Records keep arriving during the whole rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let (world, stop, produced) = (world.clone(), stop.clone(), produced.clone());
        tokio::spawn(async move {
            let kafka = testkit::loadgen::producer(&world.stack.bootstrap).expect("producer");
            let mut lsn = 10_000_000;
            let mut r = 0;
            while !stop.load(Ordering::Relaxed) {
                let records = round(&world, r, customers, &mut lsn);
                testkit::loadgen::produce_all(&kafka, &records)
                    .await
                    .expect("produce");
                r += 1;
                produced.store(r as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r
        })
    };
    wait_until("records to arrive", Duration::from_secs(30), || {
        produced.load(Ordering::Relaxed) >= 2
    })
    .await;
    let at_start = produced.load(Ordering::Relaxed);
    let rebuild_out = {
        let config = config.clone();
        let staging = staging.to_string();
        tokio::task::spawn_blocking(move || {
            rebuild(
                &config,
                &["--staging-db", &staging, "--batch-size", "100"],
                Duration::from_secs(180),
            )
        })
        .await
        .unwrap()
    };
    let stdout = assert_ok(&rebuild_out);
    eprintln!("{stdout}");
    let during = produced.load(Ordering::Relaxed) - at_start;
    assert!(
        during >= 2,
        "only {during} rounds produced during the rebuild"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = producer.await.unwrap();
    wait_applied_to_end(&world, live).await;
    terminate(&run);
    let status = run.wait().unwrap();
    assert!(status.success(), "sink run exited with {status}");

    world.clean_build(reference, DEFAULT_MAPPINGS).await;
    assert_same(
        &snapshot(&world.stack, live, true),
        &snapshot(&world.stack, reference, true),
        &format!("state after rebuild + live sink vs clean build ({rounds} rounds during the rebuild)\n{stdout}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_rebuild_leaves_the_old_state_serving_and_a_rerun_works() {
    let world = World::new(1, &[]).await;
    let dbs = take_dbs(&world.stack, 2);
    let (live, staging) = (dbs[0], dbs[1]);
    world.produce(&world.workload(5_000, 1_000)).await;
    world.clean_build(live, DEFAULT_MAPPINGS).await;
    let before = snapshot(&world.stack, live, false);
    let config = world.write_config("live", &world.yaml(live, &format!("r{}-live", world.id)));
    let path = config.to_str().unwrap().to_owned();
    let staging_arg = staging.to_string();
    let slow = [
        "rebuild",
        "--config",
        &path,
        "--staging-db",
        &staging_arg,
        "--batch-size",
        "5",
        "--linger-ms",
        "1",
    ];
    let mut staged = world.stack.conn(staging);
    let mut conn = world.stack.conn(live);

    // SIGTERM: stops, releases the lock, exits 1 with the reason.
    let child = sink(&slow)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the rebuild to write to the staging db",
        Duration::from_secs(60),
        || redis::cmd("DBSIZE").query::<i64>(&mut staged).unwrap() > 100,
    )
    .await;
    terminate(&child);
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("interrupted; the live state is unchanged"),
        "{stderr}"
    );
    assert!(
        !conn.exists::<_, bool>("sink:rebuild:lock").unwrap(),
        "lock kept after SIGTERM"
    );
    assert_same(
        &snapshot(&world.stack, live, false),
        &before,
        "live state after SIGTERM",
    );

    // SIGKILL: the lock stays until it expires; meanwhile a rerun refuses.
    let _: () = redis::cmd("FLUSHDB").query(&mut staged).unwrap();
    let mut child = sink(&slow)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the rebuild to write to the staging db",
        Duration::from_secs(60),
        || redis::cmd("DBSIZE").query::<i64>(&mut staged).unwrap() > 100,
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_same(
        &snapshot(&world.stack, live, false),
        &before,
        "live state after SIGKILL",
    );
    let refused = rebuild(
        &config,
        &["--staging-db", &staging_arg],
        Duration::from_secs(60),
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("another rebuild of db"), "{stderr}");
    wait_until("the lock to expire", Duration::from_secs(15), || {
        !conn.exists::<_, bool>("sink:rebuild:lock").unwrap()
    })
    .await;

    // The rerun starts clean (the partial staging state is flushed) and swaps.
    let leftover: i64 = redis::cmd("DBSIZE").query(&mut staged).unwrap();
    assert!(leftover > 0, "expected a partial state in the staging db");
    let _: () = staged.set("stray-in-staging", "x").unwrap();
    assert_ok(&rebuild(
        &config,
        &["--staging-db", &staging_arg],
        Duration::from_secs(120),
    ));
    assert_same(
        &snapshot(&world.stack, live, false),
        &before,
        "state after the rerun",
    );
}
