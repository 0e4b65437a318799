//! The writers against each other on generated inputs: random configurations (composite
//! primary keys, several unique indexes, renamed and subset fields, relations ordered by a
//! timestamp, a number or nothing, several mappings) and random histories (partitions
//! interleaved, suffixes delivered again, deletes under REPLICA IDENTITY DEFAULT and FULL,
//! primary-key changes, unique values moving between rows, parent changes, truncates,
//! tombstones), applied through the Lua script writer, through the owned writer, and
//! through the script handing over halfway to an exclusive writer (which loads the
//! bookkeeping the script stored), must give the same outcome for every batch and leave
//! the same Redis state halfway and at the end (every key with its type and content,
//! bookkeeping and offsets included; only `applied_at_ms`, a clock reading, is masked).
//!
//! Each case writes under three random key prefixes of the shared Redis (`REDIS_URL`), one
//! per writer, and deletes its keys when it passes. 64 cases by default; `PROPTEST_CASES`
//! sets another number, `PROPTEST_RNG_SEED` fixes the seed. A failing case is shrunk,
//! printed, and saved to `differential_writers.proptest-regressions` beside this file,
//! which later runs try first.

use crate::differential;

use deadpool_redis::Pool;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::support::{dump_tagged, pool, redis_url};
use differential::config::{config_spec, load, yaml, ConfigSpec};
use differential::history::{deliver, history_spec, logs, HistorySpec};
use differential::writers::{Kind, Writer};

/// Steps of a history at most (each one to three messages, before redeliveries).
const MAX_STEPS: usize = 60;

#[derive(Debug, Clone)]
struct Case {
    config: ConfigSpec,
    history: HistorySpec,
}

fn case() -> impl Strategy<Value = Case> {
    (config_spec(), history_spec(MAX_STEPS)).prop_map(|(config, history)| Case { config, history })
}

/// `PROPTEST_CASES`, or 64.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn script_and_owned_writers_leave_the_same_state(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(same_state(&case))?;
    }
}

async fn same_state(case: &Case) -> Result<(), TestCaseError> {
    let pool = pool().await;
    let url = redis_url();
    // Script, owned, and script handing over to an exclusive writer halfway.
    let tags = [random_tag(), random_tag(), random_tag()];
    let texts = tags.clone().map(|tag| yaml(&case.config, &tag, &url));
    let script = Writer::new(Kind::Script, pool.clone(), load(&texts[0]));
    let owned = Writer::new(Kind::Owned, pool.clone(), load(&texts[1]));
    let mut handover = Writer::new(Kind::Script, pool.clone(), load(&texts[2]));
    let logs = logs(&case.config, &case.history);
    let batches = deliver(&logs, &case.history.deliveries);
    let offsets = |tag: &str| -> Vec<String> {
        logs.iter()
            .filter_map(|log| log.first())
            .map(|m| format!("{tag}.m{}/{}", m.table, m.partition))
            .collect()
    };
    let compare = |after: usize| {
        let (pool, offsets, tags, texts) = (&pool, &offsets, &tags, &texts);
        async move {
            let script = dump_tagged(pool, &tags[0], &offsets(&tags[0]), false).await;
            for (other, tag) in ["owned", "exclusive"].into_iter().zip(&tags[1..]) {
                let dump = dump_tagged(pool, tag, &offsets(tag), false).await;
                if script != dump {
                    return Err(TestCaseError::fail(format!(
                        "states differ after batch {after} (- script, + {other}):\n{}\nconfiguration:\n{}",
                        diff(&script, &dump),
                        texts[0].replace(tags[0].as_str(), "P"),
                    )));
                }
            }
            Ok(())
        }
    };
    let half = batches.len() / 2;
    for (n, batch) in batches.iter().enumerate() {
        if n == half && n > 0 {
            compare(n - 1).await?;
            handover = handover.handed_to_exclusive().await;
        }
        let a = script.apply(batch).await;
        prop_assert!(a.is_ok(), "batch {} failed: {:?}", n, a);
        let (b, c) = (owned.apply(batch).await, handover.apply(batch).await);
        prop_assert_eq!(
            &a,
            &b,
            "outcome of batch {} (left: script, right: owned)",
            n
        );
        let which = if n < half { "script" } else { "exclusive" };
        prop_assert_eq!(
            &a,
            &c,
            "outcome of batch {} (left: script, right: {})",
            n,
            which
        );
    }
    compare(batches.len().saturating_sub(1)).await?;
    handover.release().await;
    for tag in &tags {
        forget(&pool, tag, &offsets(tag)).await;
    }
    Ok(())
}

fn random_tag() -> String {
    format!("d{:08x}", rand::random::<u32>())
}

/// The lines only in `left` (`-`) and only in `right` (`+`), each under the key it belongs
/// to.
fn diff(left: &str, right: &str) -> String {
    let sections = |dump: &str| -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut key = String::new();
        for line in dump.lines() {
            if !line.starts_with(' ') {
                key = line.to_owned();
            }
            out.push((key.clone(), line.to_owned()));
        }
        out
    };
    let (l, r) = (sections(left), sections(right));
    let mut out = String::new();
    for (sign, mine, theirs) in [("-", &l, &r), ("+", &r, &l)] {
        for (key, line) in mine {
            if !theirs.contains(&(key.clone(), line.clone())) {
                if line == key {
                    out.push_str(&format!("{sign} {line}\n"));
                } else {
                    out.push_str(&format!("{sign} {key}\n{sign}   {}\n", line.trim_start()));
                }
            }
        }
    }
    out
}

/// Deletes what a passing case wrote under `tag`.
async fn forget(pool: &Pool, tag: &str, offsets: &[String]) {
    let mut conn = pool.get().await.expect("redis connection");
    for pattern in [format!("{tag}:*"), format!("sink:*{tag}_*")] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
    }
    if !offsets.is_empty() {
        let _: i64 = redis::cmd("HDEL")
            .arg("sink:offsets")
            .arg(offsets)
            .query_async(&mut conn)
            .await
            .expect("HDEL sink:offsets");
    }
}
