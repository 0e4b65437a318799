//! The `sink:rows` entries a rebuilding writer held back, as requests of `HSET`s
//! ([`super::OwnedWriter::write_held_rows`]): a command per hash and at most
//! [`PER_HSET`] entries, a request once its commands hold [`PER_REQUEST`] entries, so that
//! the requests stay a few megabytes whatever the number of rows.

/// Entries per `HSET` at most.
const PER_HSET: usize = 1000;
/// Entries after which a request goes out (at the end of a command).
const PER_REQUEST: usize = 100_000;

/// Gathers entries into requests.
#[derive(Default)]
pub(super) struct Requests<'a> {
    request: redis::Pipeline,
    /// Entries in `request`.
    in_request: usize,
    /// The `HSET` being filled: its hash, the command, its entries.
    hset: Option<(&'a str, redis::Cmd, usize)>,
}

impl<'a> Requests<'a> {
    /// Adds the entry `key` → `position` of `hash` (a hash's entries come together); a
    /// request that is full, with its number of entries.
    pub(super) fn push(
        &mut self,
        hash: &'a str,
        key: &str,
        position: i64,
    ) -> Option<(redis::Pipeline, usize)> {
        if self
            .hset
            .as_ref()
            .is_some_and(|(h, _, n)| *h != hash || *n == PER_HSET)
        {
            self.close_hset();
        }
        let full = (self.in_request >= PER_REQUEST).then(|| self.take());
        let (_, cmd, n) = self.hset.get_or_insert_with(|| {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(hash);
            (hash, cmd, 0)
        });
        cmd.arg(key).arg(position);
        *n += 1;
        full
    }

    /// The last request, unless it is empty.
    pub(super) fn finish(mut self) -> Option<(redis::Pipeline, usize)> {
        self.close_hset();
        (self.in_request > 0).then(|| self.take())
    }

    fn close_hset(&mut self) {
        if let Some((_, cmd, n)) = self.hset.take() {
            self.request.add_command(cmd).ignore();
            self.in_request += n;
        }
    }

    fn take(&mut self) -> (redis::Pipeline, usize) {
        let entries = std::mem::take(&mut self.in_request);
        (std::mem::take(&mut self.request), entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each request's `HSET`s: (hash, entries).
    fn shape(request: &redis::Pipeline) -> Vec<(String, usize)> {
        request
            .cmd_iter()
            .map(|cmd| {
                let args: Vec<Vec<u8>> = cmd
                    .args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => b.to_vec(),
                        _ => Vec::new(),
                    })
                    .collect();
                assert_eq!(args[0], b"HSET");
                (
                    String::from_utf8(args[1].clone()).unwrap(),
                    (args.len() - 2) / 2,
                )
            })
            .collect()
    }

    #[test]
    fn entries_go_out_a_command_per_hash_and_slice_and_a_request_past_a_hundred_thousand() {
        let mut requests = Requests::default();
        let mut out = Vec::new();
        let entries = (0..150_500).map(|i| if i < 2_500 { ("a", i) } else { ("b", i) });
        for (hash, i) in entries {
            out.extend(requests.push(hash, &format!("k{i}"), i));
        }
        out.extend(requests.finish());
        let shapes: Vec<(Vec<(String, usize)>, usize)> =
            out.iter().map(|(r, n)| (shape(r), *n)).collect();
        assert_eq!(shapes.len(), 2);
        // a: 1000 + 1000 + 500, then b by the thousand: the first command past 100,000.
        assert_eq!(shapes[0].1, 100_500);
        assert_eq!(shapes[1].1, 50_000);
        for (commands, entries) in &shapes {
            assert_eq!(commands.iter().map(|(_, n)| n).sum::<usize>(), *entries);
            assert!(commands.iter().all(|(_, n)| *n <= PER_HSET), "{commands:?}");
        }
        assert_eq!(
            shapes[0].0[..4],
            [
                ("a".to_owned(), 1000),
                ("a".to_owned(), 1000),
                ("a".to_owned(), 500),
                ("b".to_owned(), 1000)
            ]
        );
        assert!(Requests::default().finish().is_none());
    }
}
