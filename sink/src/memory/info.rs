//! `INFO memory`, read and parsed: what the guard compares (`used_memory` against
//! `maxmemory`) and where the policy check falls back to when `CONFIG GET` is not allowed
//! (`maxmemory_policy`).

use redis::aio::ConnectionLike;

/// The figures of `INFO memory` the sink uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryInfo {
    /// `used_memory`, in bytes.
    pub used: u64,
    /// `maxmemory`, in bytes (0: no limit).
    pub max: u64,
    /// `maxmemory_policy`, when the server reports it.
    pub policy: Option<String>,
}

impl MemoryInfo {
    /// Sends `INFO memory` on `conn`.
    pub async fn read(conn: &mut impl ConnectionLike) -> redis::RedisResult<MemoryInfo> {
        let text: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
        Ok(MemoryInfo::parse(&text))
    }

    /// Parses the text of `INFO memory` (`field:value` lines; others are ignored).
    pub fn parse(text: &str) -> MemoryInfo {
        let mut info = MemoryInfo::default();
        for line in text.lines() {
            let Some((field, value)) = line.trim().split_once(':') else {
                continue;
            };
            match field {
                "used_memory" => info.used = value.parse().unwrap_or(0),
                "maxmemory" => info.max = value.parse().unwrap_or(0),
                "maxmemory_policy" => info.policy = Some(value.to_owned()),
                _ => {}
            }
        }
        info
    }

    /// Whether `used_memory` exceeds `share` of `maxmemory` (never without a `maxmemory`).
    pub fn above(&self, share: f64) -> bool {
        self.max > 0 && self.used as f64 > share * self.max as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:960000\r\nused_memory_human:937.50K\r\n\
        used_memory_rss:9000000\r\nmaxmemory:1000000\r\nmaxmemory_human:976.56K\r\n\
        maxmemory_policy:noeviction\r\n";

    #[test]
    fn parses_used_max_and_policy() {
        let info = MemoryInfo::parse(INFO);
        assert_eq!(
            info,
            MemoryInfo {
                used: 960_000,
                max: 1_000_000,
                policy: Some("noeviction".to_owned()),
            }
        );
        assert!(info.above(0.95));
        assert!(!info.above(0.97));
    }

    #[test]
    fn no_maxmemory_is_never_full() {
        let info = MemoryInfo::parse("used_memory:5000000\r\nmaxmemory:0\r\n");
        assert_eq!(info.policy, None);
        assert!(!info.above(0.01));
    }
}
