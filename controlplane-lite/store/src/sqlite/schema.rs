//! The kine log schema and every SQL statement the SQLite backend runs.
//!
//! One row per change: creates, updates and deletes are all INSERTs, deletes insert a tombstone
//! (`deleted = 1`). `id` is the revision. A row carries enough to rebuild its watch event without
//! a join: `old_value` is the value it replaced (updates), and a tombstone's `value` is the last
//! value before the delete. `prev_revision` links a row to the one it superseded (0 for the first
//! create of a key, or when the tombstone before it was compacted away); `UNIQUE(name,
//! prev_revision)` backstops optimistic concurrency even though one writer already serialises.
//!
//! `ferry_meta` holds the compaction floor (`compact_rev`) and how far physical deletion has got
//! (`compact_done`). Prefix matching uses `name >= prefix AND name < prefix_end` (never `LIKE`,
//! which would treat `_` and `%` in keys as wildcards and is case-insensitive).

use rusqlite::{params, Connection, OptionalExtension};

use crate::keys::prefix_end;
use crate::{Event, EventKind, Kv, Rev};

/// Schema version stored in `ferry_meta`.
const SCHEMA_VERSION: i64 = 1;

/// Creates the tables when missing (idempotent).
pub(super) const CREATE: &str = "
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL DEFAULT 0,
    value BLOB NOT NULL,
    old_value BLOB
);
CREATE INDEX IF NOT EXISTS kine_name_index ON kine(name);
CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine(name, prev_revision);
CREATE TABLE IF NOT EXISTS ferry_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO ferry_meta (key, value) VALUES ('compact_rev', 0), ('compact_done', 0);
";

/// Creates the schema and records its version; fails on a newer, unknown version.
pub(super) fn init(conn: &Connection) -> rusqlite::Result<Result<(), i64>> {
    conn.execute_batch(CREATE)?;
    conn.execute(
        "INSERT OR IGNORE INTO ferry_meta (key, value) VALUES ('schema_version', ?1)",
        params![SCHEMA_VERSION],
    )?;
    let version = meta(conn, "schema_version")?;
    Ok(if version > SCHEMA_VERSION {
        Err(version)
    } else {
        Ok(())
    })
}

/// The half-open key range a prefix selects.
#[derive(Debug, Clone)]
pub(super) struct KeyRange {
    pub(super) start: String,
    pub(super) end: Option<String>,
}

impl KeyRange {
    pub(super) fn prefix(prefix: &str) -> KeyRange {
        KeyRange {
            start: prefix.to_owned(),
            end: prefix_end(prefix),
        }
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        key.starts_with(self.start.as_str())
    }

    /// `col >= ?s [AND col < ?e]`, with the parameter numbers given.
    fn clause(&self, col: &str, s: usize, e: usize) -> String {
        match self.end {
            Some(_) => format!("{col} >= ?{s} AND {col} < ?{e}"),
            None => format!("{col} >= ?{s}"),
        }
    }
}

/// The latest row of a key.
#[derive(Debug)]
pub(super) struct Latest {
    pub(super) id: Rev,
    pub(super) deleted: bool,
    pub(super) create_revision: Rev,
    pub(super) value: Vec<u8>,
}

impl Latest {
    pub(super) fn into_kv(self, key: String) -> Kv {
        Kv {
            key,
            value: self.value,
            create_rev: self.create_revision,
            mod_rev: self.id,
        }
    }
}

/// The latest row of `key` (live or tombstone).
pub(super) fn latest(conn: &Connection, key: &str) -> rusqlite::Result<Option<Latest>> {
    conn.prepare_cached(
        "SELECT id, deleted, create_revision, value FROM kine WHERE name = ?1 ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![key], |row| {
        Ok(Latest {
            id: row.get(0)?,
            deleted: row.get(1)?,
            create_revision: row.get(2)?,
            value: row.get(3)?,
        })
    })
    .optional()
}

/// A row to append.
#[derive(Debug)]
pub(super) struct NewRow<'a> {
    pub(super) id: Rev,
    pub(super) name: &'a str,
    pub(super) created: bool,
    pub(super) deleted: bool,
    pub(super) create_revision: Rev,
    pub(super) prev_revision: Rev,
    pub(super) value: &'a [u8],
    pub(super) old_value: Option<&'a [u8]>,
}

pub(super) fn insert(conn: &Connection, row: &NewRow<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
    )?
    .execute(params![
        row.id,
        row.name,
        row.created,
        row.deleted,
        row.create_revision,
        row.prev_revision,
        row.value,
        row.old_value,
    ])?;
    Ok(())
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM ferry_meta WHERE key = ?1")?
        .query_row(params![key], |row| row.get(0))
}

pub(super) fn set_meta(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE ferry_meta SET value = ?2 WHERE key = ?1")?
        .execute(params![key, value])?;
    Ok(())
}

/// The newest revision ever assigned (survives compaction deleting the newest row: it comes
/// from `sqlite_sequence`, which AUTOINCREMENT keeps).
pub(super) fn current_rev(conn: &Connection) -> rusqlite::Result<Rev> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kine'), 0)",
    )?
    .query_row([], |row| row.get(0))
}

/// The compaction floor: the oldest revision still readable.
pub(super) fn compact_rev(conn: &Connection) -> rusqlite::Result<Rev> {
    meta(conn, "compact_rev")
}

/// How far physical compaction has deleted (`<= compact_rev`).
pub(super) fn compact_done(conn: &Connection) -> rusqlite::Result<Rev> {
    meta(conn, "compact_done")
}

/// Live keys of `range` at revision `rev`, strictly after `start_after`, at most `limit`; and
/// whether more follow.
pub(super) fn list(
    conn: &Connection,
    range: &KeyRange,
    start_after: &str,
    rev: Rev,
    limit: Option<usize>,
) -> rusqlite::Result<(Vec<Kv>, bool)> {
    // Walk the name index in key order and keep each key's newest row at `rev` (a correlated
    // lookup on `(name, id)`), so a page costs O(page), not O(keys after `start_after`): a
    // GROUP BY subquery would be materialised and sorted for every page.
    let sql = format!(
        "SELECT kv.name, kv.value, kv.create_revision, kv.id FROM kine kv
         WHERE {} AND kv.name > ?2
           AND kv.id = (SELECT MAX(k2.id) FROM kine k2 WHERE k2.name = kv.name AND k2.id <= ?3)
           AND kv.deleted = 0
         ORDER BY kv.name LIMIT ?4",
        range.clause("kv.name", 1, 5)
    );
    // One extra row tells whether more follow; -1 is "no limit" to SQLite.
    let fetch = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX - 1) + 1);
    let mut stmt = conn.prepare_cached(&sql)?;
    let map = |row: &rusqlite::Row<'_>| {
        Ok(Kv {
            key: row.get(0)?,
            value: row.get(1)?,
            create_rev: row.get(2)?,
            mod_rev: row.get(3)?,
        })
    };
    let mut kvs = match &range.end {
        Some(end) => stmt
            .query_map(params![range.start, start_after, rev, fetch, end], map)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => stmt
            .query_map(params![range.start, start_after, rev, fetch], map)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    let more = limit.is_some_and(|l| kvs.len() > l);
    if let Some(l) = limit {
        kvs.truncate(l);
    }
    Ok((kvs, more))
}

/// Number of live keys of `range` at the latest revision.
pub(super) fn count(conn: &Connection, range: &KeyRange) -> rusqlite::Result<u64> {
    let sql = format!(
        "SELECT COUNT(*) FROM kine kv
         JOIN (SELECT MAX(id) AS id FROM kine WHERE {} GROUP BY name) m ON m.id = kv.id
         WHERE kv.deleted = 0",
        range.clause("name", 1, 2)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let n: i64 = match &range.end {
        Some(end) => stmt.query_row(params![range.start, end], |row| row.get(0))?,
        None => stmt.query_row(params![range.start], |row| row.get(0))?,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Changes in `range` with `after < id <= upto`, in revision order, at most `limit`.
pub(super) fn changes(
    conn: &Connection,
    range: &KeyRange,
    after: Rev,
    upto: Rev,
    limit: usize,
) -> rusqlite::Result<Vec<Event>> {
    // `+name` keeps SQLite on the primary key (a revision range), which is what a watch resuming
    // from a recent revision wants.
    let sql = format!(
        "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value
         FROM kine WHERE id > ?1 AND id <= ?2 AND {} ORDER BY id LIMIT ?3",
        range.clause("+name", 4, 5)
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = match &range.end {
        Some(end) => stmt
            .query_map(params![after, upto, limit, range.start, end], row_event)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => stmt
            .query_map(params![after, upto, limit, range.start], row_event)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(rows)
}

/// Rebuilds the watch event of one log row.
fn row_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let id: Rev = row.get(0)?;
    let name: String = row.get(1)?;
    let created: bool = row.get(2)?;
    let deleted: bool = row.get(3)?;
    let create_rev: Rev = row.get(4)?;
    let prev_revision: Rev = row.get(5)?;
    let value: Vec<u8> = row.get(6)?;
    let old_value: Option<Vec<u8>> = row.get(7)?;
    Ok(event(
        name,
        RowKind::of(created, deleted),
        id,
        create_rev,
        prev_revision,
        value,
        old_value,
    ))
}

/// What a log row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowKind {
    Create,
    Update,
    Delete,
}

impl RowKind {
    fn of(created: bool, deleted: bool) -> RowKind {
        if deleted {
            RowKind::Delete
        } else if created {
            RowKind::Create
        } else {
            RowKind::Update
        }
    }
}

/// The event of a change (the writer publishes exactly what a catch-up read rebuilds).
pub(super) fn event(
    key: String,
    kind: RowKind,
    rev: Rev,
    create_rev: Rev,
    prev_revision: Rev,
    value: Vec<u8>,
    old_value: Option<Vec<u8>>,
) -> Event {
    match kind {
        RowKind::Create => Event {
            kind: EventKind::Put,
            kv: Kv {
                key,
                value,
                create_rev,
                mod_rev: rev,
            },
            prev: None,
        },
        RowKind::Update => Event {
            kind: EventKind::Put,
            prev: Some(Kv {
                key: key.clone(),
                value: old_value.unwrap_or_default(),
                create_rev,
                mod_rev: prev_revision,
            }),
            kv: Kv {
                key,
                value,
                create_rev,
                mod_rev: rev,
            },
        },
        RowKind::Delete => Event {
            kind: EventKind::Delete,
            prev: Some(Kv {
                key: key.clone(),
                value: value.clone(),
                create_rev,
                mod_rev: prev_revision,
            }),
            kv: Kv {
                key,
                value,
                create_rev,
                mod_rev: rev,
            },
        },
    }
}

/// The id of the last row of the next compaction batch in `(after, floor]`, or `None` when the
/// range is empty.
pub(super) fn compact_batch_end(
    conn: &Connection,
    after: Rev,
    floor: Rev,
    batch: usize,
) -> rusqlite::Result<Option<Rev>> {
    conn.prepare_cached(
        "SELECT MAX(id) FROM (SELECT id FROM kine WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3)",
    )?
    .query_row(
        params![after, floor, i64::try_from(batch).unwrap_or(i64::MAX)],
        |row| row.get(0),
    )
}

/// Deletes what rows in `(after, hi]` make obsolete: the rows they superseded (their
/// `prev_revision`, necessarily older) and the tombstones among them. With `hi <= floor`, no
/// read at a revision `>= floor` needs any deleted row. Returns the number of rows deleted.
pub(super) fn compact_range(conn: &Connection, after: Rev, hi: Rev) -> rusqlite::Result<usize> {
    let superseded = conn
        .prepare_cached(
            "DELETE FROM kine WHERE id IN
               (SELECT prev_revision FROM kine WHERE id > ?1 AND id <= ?2 AND prev_revision > 0)",
        )?
        .execute(params![after, hi])?;
    let tombstones = conn
        .prepare_cached("DELETE FROM kine WHERE id > ?1 AND id <= ?2 AND deleted = 1")?
        .execute(params![after, hi])?;
    Ok(superseded + tombstones)
}
