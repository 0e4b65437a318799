//! The rows' bytes, packed in pages instead of one allocation per row.
//!
//! A million small long-lived allocations, made while a catching-up writer also allocates
//! and frees a stream of transient ones (decoded records, batches, replies), leave the
//! allocator's small-object pages each holding a few live rows: the process kept about 2.5
//! times its bookkeeping resident (BENCHMARKS.md, *Exclusive writer memory*). Pages hold
//! only rows, so the bookkeeping stays as dense as the rows are live.
//!
//! A row's bytes are written once, behind their length (a varint), and never move except
//! in a compaction. Replacing or removing a row leaves its old bytes dead in their page; a
//! page none of whose bytes live is freed at once. When a quarter of the written bytes are
//! dead, [`Arena::compact`] moves the rows of every page an eighth dead or more to the page
//! being filled, which frees those pages and leaves less than an eighth dead: the next
//! compaction waits for another eighth of the bytes to die, which pays for its pass over
//! every row.

use super::row_bytes::{put_varint, take_varint, varint_len};

/// Bytes of a page; a row longer than a page gets a page of its own, of its length.
const PAGE_BYTES: usize = 512 * 1024;

/// Bytes of the first page. Each next one is as large as all the pages before (up to
/// [`PAGE_BYTES`]), so that a small table holds a few KiB, not half a MiB.
const FIRST_PAGE_BYTES: usize = 4 * 1024;

/// Dead bytes below this never start a compaction (a small table is not worth the pass).
const COMPACT_AFTER_DEAD_BYTES: usize = 4 * PAGE_BYTES;

/// Where a row's bytes are: a page and the offset of their length in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    page: u32,
    offset: u32,
}

#[derive(Default)]
struct Page {
    bytes: Vec<u8>,
    /// Bytes of the rows that live here (with their lengths).
    live: usize,
}

/// Rows' bytes in pages.
#[derive(Default)]
pub(super) struct Arena {
    pages: Vec<Page>,
    /// The page rows are appended to.
    filling: Option<u32>,
    /// Numbers of freed pages, which new pages take.
    free: Vec<u32>,
    /// Bytes of the rows that live, with their lengths.
    live: usize,
    /// Bytes written to the pages held: the live ones and the dead ones.
    written: usize,
    /// Bytes of the pages' allocations.
    held: usize,
    /// Compactions made (tests check that they stay rare).
    #[cfg(test)]
    compactions: usize,
}

impl Arena {
    /// The bytes at `loc`.
    pub(super) fn get(&self, loc: Loc) -> &[u8] {
        let mut rest = &self.pages[loc.page as usize].bytes[loc.offset as usize..];
        let len = take_varint(&mut rest);
        &rest[..len]
    }

    /// Stores `bytes`; where they are.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Loc {
        let need = varint_len(bytes.len()) + bytes.len();
        let page = match self.filling {
            Some(p) if self.room(p) >= need => p,
            _ if need > PAGE_BYTES => self.new_page(need),
            _ => {
                let p = self.new_page(self.held.clamp(FIRST_PAGE_BYTES, PAGE_BYTES));
                self.filling = Some(p);
                p
            }
        };
        let held = &mut self.pages[page as usize];
        let offset = u32::try_from(held.bytes.len()).expect("a page is under 4 GiB");
        put_varint(&mut held.bytes, bytes.len());
        held.bytes.extend_from_slice(bytes);
        held.live += need;
        self.live += need;
        self.written += need;
        Loc { page, offset }
    }

    /// Marks the bytes at `loc` dead; frees their page when nothing else lives there.
    pub(super) fn remove(&mut self, loc: Loc) {
        let len = self.get(loc).len();
        let need = varint_len(len) + len;
        let page = &mut self.pages[loc.page as usize];
        page.live -= need;
        self.live -= need;
        if page.live == 0 && self.filling != Some(loc.page) {
            self.release(loc.page);
        }
    }

    /// Whether enough bytes are dead for [`Arena::compact`] to be worth a pass over the rows.
    pub(super) fn wants_compaction(&self) -> bool {
        let dead = self.written - self.live;
        dead >= COMPACT_AFTER_DEAD_BYTES && dead * 4 >= self.written
    }

    /// Moves every row of `locs` (every row the arena holds) whose page is an eighth dead or
    /// more to the page being filled, which frees those pages.
    pub(super) fn compact<'a>(&mut self, locs: impl Iterator<Item = &'a mut Loc>) {
        #[cfg(test)]
        {
            self.compactions += 1;
        }
        let sparse: Vec<bool> = self
            .pages
            .iter()
            .map(|page| {
                let dead = page.bytes.len() - page.live;
                page.bytes.capacity() > 0 && dead * 8 >= page.bytes.len()
            })
            .collect();
        if self.filling.is_some_and(|p| sparse[p as usize]) {
            self.filling = None;
        }
        let mut moved = Vec::new();
        for loc in locs {
            if sparse[loc.page as usize] {
                moved.clear();
                moved.extend_from_slice(self.get(*loc));
                let old = *loc;
                *loc = self.push(&moved);
                // Frees the page with its last row; its number may then take moved rows,
                // which no later `loc` can point at.
                self.remove(old);
            }
        }
        for (p, &sparse) in sparse.iter().enumerate() {
            let page = &self.pages[p];
            let unfreed = page.bytes.capacity() > 0 && page.live == 0;
            if sparse && unfreed && self.filling != Some(p as u32) {
                // The page being filled when the compaction started, every row of it dead.
                self.release(p as u32);
            }
        }
    }

    /// Compactions made.
    #[cfg(test)]
    pub(super) fn compactions(&self) -> usize {
        self.compactions
    }

    /// Bytes of the pages' allocations.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Bytes of the rows that live, with their lengths: what the rows take, whatever their
    /// history. The pages hold more by the dead bytes a compaction has not reclaimed yet (at
    /// most a third of the live ones once past 2 MiB) and the room left in the page being
    /// filled.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Bytes page `p` can still take.
    fn room(&self, p: u32) -> usize {
        let page = &self.pages[p as usize].bytes;
        page.capacity() - page.len()
    }

    fn new_page(&mut self, capacity: usize) -> u32 {
        let page = Page {
            bytes: Vec::with_capacity(capacity),
            live: 0,
        };
        self.held += page.bytes.capacity();
        match self.free.pop() {
            Some(p) => {
                self.pages[p as usize] = page;
                p
            }
            None => {
                self.pages.push(page);
                u32::try_from(self.pages.len() - 1).expect("fewer than 2^32 pages of rows")
            }
        }
    }

    fn release(&mut self, page: u32) {
        let freed = std::mem::take(&mut self.pages[page as usize]);
        self.held -= freed.bytes.capacity();
        self.written -= freed.bytes.len();
        self.free.push(page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_written_across_pages() {
        let mut arena = Arena::default();
        let big = vec![7u8; PAGE_BYTES + 10];
        let rows: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| i.to_string().repeat(5).into_bytes())
            .collect();
        let mut locs: Vec<Loc> = rows.iter().map(|r| arena.push(r)).collect();
        let big_loc = arena.push(&big);
        assert!(arena.pages.len() >= 3);
        for (row, loc) in rows.iter().zip(&locs) {
            assert_eq!(arena.get(*loc), &row[..]);
        }
        assert_eq!(arena.get(big_loc), &big[..]);
        arena.remove(big_loc);
        let capacities: usize = arena.pages.iter().map(|p| p.bytes.capacity()).sum();
        assert_eq!(arena.held(), capacities);
        assert!(
            arena.pages.iter().all(|p| p.bytes.capacity() <= PAGE_BYTES),
            "the big row's page is freed"
        );
        let held = arena.held();
        for loc in locs.drain(..) {
            arena.remove(loc);
        }
        assert_eq!(arena.live(), 0);
        assert!(arena.held() < held, "pages with no live row are freed");
    }

    /// Rows replaced at random by rows of other lengths, for long: the pages stay within
    /// a bound of the live bytes and compactions stay rare (each waits for an eighth of the
    /// written bytes to die).
    #[test]
    fn steady_churn_keeps_the_pages_near_the_live_bytes() {
        let mut arena = Arena::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let row = |i: u64, len: u64| vec![i as u8; 8 + len as usize];
        let mut rows: Vec<(u64, u64, Loc)> = (0..50_000)
            .map(|i| (i, 0, arena.push(&row(i, 0))))
            .collect();
        let replaces = 1_000_000;
        for _ in 0..replaces {
            let at = (next() % rows.len() as u64) as usize;
            let len = next() % 64;
            let (i, _, loc) = rows[at];
            arena.remove(loc);
            rows[at] = (i, len, arena.push(&row(i, len)));
            if arena.wants_compaction() {
                arena.compact(rows.iter_mut().map(|(_, _, loc)| loc));
            }
            assert!(
                arena.held() <= arena.live() * 4 / 3 + COMPACT_AFTER_DEAD_BYTES + 2 * PAGE_BYTES
            );
        }
        for (i, len, loc) in &rows {
            assert_eq!(arena.get(*loc), &row(*i, *len)[..]);
        }
        // About 2 MB live; an eighth of the written bytes dies every ~6,000 replaces.
        assert!(arena.compactions > 0);
        assert!(
            arena.compactions * 2_000 < replaces,
            "{} compactions",
            arena.compactions
        );
    }

    #[test]
    fn compaction_moves_rows_out_of_sparse_pages_and_frees_them() {
        let mut arena = Arena::default();
        let row = |i: usize| format!("row {i:06} ").repeat(8).into_bytes();
        let mut locs: Vec<(usize, Loc)> = (0..200_000).map(|i| (i, arena.push(&row(i)))).collect();
        // Three rows in four die: every full page is a quarter alive.
        locs.retain(|&(i, loc)| {
            let keep = i % 4 == 0;
            if !keep {
                arena.remove(loc);
            }
            keep
        });
        assert!(arena.wants_compaction());
        let before = arena.held();
        arena.compact(locs.iter_mut().map(|(_, loc)| loc));
        for (i, loc) in &locs {
            assert_eq!(arena.get(*loc), &row(*i)[..]);
        }
        assert!(!arena.wants_compaction());
        assert!(arena.held() * 3 < before, "{} of {before}", arena.held());
        assert!(arena.held() <= arena.live() + 2 * PAGE_BYTES);
        // Page numbers freed by the compaction are taken again before new ones.
        let (pages, freed) = (arena.pages.len(), arena.free.len());
        assert!(freed > 0);
        let more: Vec<Loc> = (0..50_000).map(|i| arena.push(&row(i))).collect();
        assert!(arena.pages.len() == pages || arena.free.is_empty());
        for (i, loc) in more.iter().enumerate() {
            assert_eq!(arena.get(*loc), &row(i)[..]);
        }
        for (i, loc) in &locs {
            assert_eq!(arena.get(*loc), &row(*i)[..]);
        }
    }
}
