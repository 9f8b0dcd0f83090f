//! The model of acknowledged writes and the vector pool it draws from.

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    /// Reserved as a new id, never acknowledged.
    Absent,
    /// Acknowledged by an upsert or a bulk load, not deleted since.
    Live,
    /// Acknowledged by a delete.
    Deleted,
    /// A write whose outcome is unknown (5xx or a transport error): not checked.
    Uncertain,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) state: State,
    /// Last acknowledged version (0 = the initial load's vector).
    pub(crate) version: u32,
    /// A request touching this id is in flight.
    pub(crate) busy: bool,
}

pub(crate) const NOT_LIVE: u32 = u32::MAX;

/// Ids are dense: `0..initial` are loaded first, new ids are handed out in order.
pub(crate) struct Model {
    pub(crate) entries: Vec<Entry>,
    pub(crate) live: Vec<u64>,
    pub(crate) pos: Vec<u32>,
}

impl Model {
    pub(crate) fn with_initial(n: usize) -> Self {
        Model {
            entries: vec![
                Entry {
                    state: State::Live,
                    version: 0,
                    busy: false,
                };
                n
            ],
            live: (0..n as u64).collect(),
            pos: (0..n as u32).collect(),
        }
    }

    pub(crate) fn live_len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn add_live(&mut self, id: u64) {
        if self.pos[id as usize] == NOT_LIVE {
            self.pos[id as usize] = self.live.len() as u32;
            self.live.push(id);
        }
    }

    pub(crate) fn remove_live(&mut self, id: u64) {
        let p = self.pos[id as usize];
        if p == NOT_LIVE {
            return;
        }
        self.live.swap_remove(p as usize);
        if let Some(&moved) = self.live.get(p as usize) {
            self.pos[moved as usize] = p;
        }
        self.pos[id as usize] = NOT_LIVE;
    }

    /// A random live id no request is touching, marked busy, with the version
    /// its next write will have.
    pub(crate) fn reserve_existing(&mut self, rng: &mut ChaCha8Rng) -> Option<(u64, u32)> {
        if self.live.is_empty() {
            return None;
        }
        for _ in 0..32 {
            let id = self.live[rng.random_range(0..self.live.len())];
            let e = &mut self.entries[id as usize];
            if !e.busy {
                e.busy = true;
                return Some((id, e.version + 1));
            }
        }
        None
    }

    /// A fresh id, marked busy; its first version is 1.
    pub(crate) fn reserve_new(&mut self) -> (u64, u32) {
        let id = self.entries.len() as u64;
        self.entries.push(Entry {
            state: State::Absent,
            version: 0,
            busy: true,
        });
        self.pos.push(NOT_LIVE);
        (id, 1)
    }

    /// The writes of `ids` (at the versions reserved) were acknowledged.
    pub(crate) fn upserted(&mut self, ids: &[(u64, u32)]) {
        for &(id, version) in ids {
            let e = &mut self.entries[id as usize];
            e.state = State::Live;
            e.version = version;
            e.busy = false;
            self.add_live(id);
        }
    }

    pub(crate) fn deleted(&mut self, id: u64) {
        let e = &mut self.entries[id as usize];
        e.state = State::Deleted;
        e.busy = false;
        self.remove_live(id);
    }

    /// The request failed cleanly (4xx: nothing changed).
    pub(crate) fn release(&mut self, ids: &[(u64, u32)]) {
        for &(id, _) in ids {
            self.entries[id as usize].busy = false;
        }
    }

    /// The request's outcome is unknown: never touched or checked again.
    pub(crate) fn uncertain(&mut self, ids: &[(u64, u32)]) {
        for &(id, _) in ids {
            let e = &mut self.entries[id as usize];
            e.state = State::Uncertain;
            e.busy = false;
            self.remove_live(id);
        }
    }
}

// Vectors.

/// The pool every written vector comes from: rows `0..initial` are the initial
/// load (id i, version 0 = row i), any row may be a later version.
pub(crate) struct Pool {
    pub(crate) dim: usize,
    pub(crate) rows: usize,
    pub(crate) vectors: Vec<f32>,
    pub(crate) seed: u64,
}

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Pool {
    pub(crate) fn row_of(&self, id: u64, version: u32) -> usize {
        if version == 0 {
            id as usize
        } else {
            let h = splitmix64(self.seed ^ splitmix64(id) ^ (u64::from(version) << 48));
            (h % self.rows as u64) as usize
        }
    }

    pub(crate) fn vector(&self, id: u64, version: u32) -> &[f32] {
        let r = self.row_of(id, version);
        &self.vectors[r * self.dim..(r + 1) * self.dim]
    }
}

/// Appends `[x0,x1,...]`; Rust prints the shortest decimal that reads back as
/// the same `f32`, so the server stores exactly these values.
pub(crate) fn push_vector(out: &mut String, v: &[f32]) {
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{x}");
    }
    out.push(']');
}
