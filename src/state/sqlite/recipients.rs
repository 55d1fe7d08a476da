//! Where each recipient of a message stands, in the `recipients` table: written from the
//! pipeline's [`Recipient`]s, read back into [`MessageState`] (see [`Status::to_stored`]).

use std::collections::HashMap;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::{from_ms, insert_message, settle_message, to_ms};
use crate::recipient::{Recipient, Status};
use crate::state::{MessageState, StateError};

/// One `record_recipients` call.
#[derive(Debug, Clone)]
pub(super) struct Outcomes {
    pub(super) account: String,
    pub(super) uidl: String,
    pub(super) dedup: Option<String>,
    pub(super) recipients: Vec<Recipient>,
    pub(super) settle: bool,
    pub(super) now: SystemTime,
}

/// One `record_recipients` call inside a transaction.
pub(super) fn write_outcomes(tx: &Connection, o: &Outcomes) -> Result<(), StateError> {
    insert_message(tx, &o.account, &o.uidl, o.now)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO recipients
               (account, uidl, recipient, address, status, detail, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (account, uidl, recipient) DO UPDATE SET
               address = excluded.address, status = excluded.status,
               detail = excluded.detail, updated_at = excluded.updated_at,
               attempts = recipients.attempts + 1
             WHERE recipients.status = 'pending'",
        )?;
        for r in &o.recipients {
            // Pending: nothing known that could be recorded.
            let Some((status, detail)) = r.status.to_stored() else {
                continue;
            };
            stmt.execute(params![
                o.account,
                o.uidl,
                r.address.dedup_key(),
                r.address.as_str(),
                status,
                detail,
                to_ms(o.now)
            ])?;
        }
    }
    if let Some(dedup) = &o.dedup {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO deliveries (dedup_id, recipient, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (dedup_id, recipient) DO UPDATE SET at = excluded.at",
        )?;
        for r in o.recipients.iter().filter(|r| r.status.is_settled()) {
            stmt.execute(params![dedup, r.address.dedup_key(), to_ms(o.now)])?;
        }
    }
    if o.settle {
        settle_message(tx, &o.account, &o.uidl, o.now)?;
    }
    Ok(())
}

/// The columns of `messages m` that [`message_row`] reads, in its order.
pub(super) const MESSAGE_COLUMNS: &str =
    "m.first_seen, m.settled_at, m.deleted_at, m.attempts, m.retry_at";

/// A message's state from the [`MESSAGE_COLUMNS`] of `row`, from column `at` on; its
/// recipients and quarantine are read apart.
pub(super) fn message_row(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> Result<MessageState, rusqlite::Error> {
    let time = |i: usize| Ok::<_, rusqlite::Error>(row.get::<_, Option<i64>>(at + i)?.map(from_ms));
    Ok(MessageState {
        first_seen: from_ms(row.get(at)?),
        settled_at: time(1)?,
        deleted_at: time(2)?,
        recipients: HashMap::new(),
        attempts: row.get(at + 3)?,
        retry_at: time(4)?,
        quarantine: None,
    })
}

/// The message's state with its recipients (not its quarantine), if the store holds it.
pub(super) fn message_state(
    conn: &Connection,
    account: &str,
    uidl: &str,
) -> Result<Option<MessageState>, StateError> {
    let state = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.account = ?1 AND m.uidl = ?2"
        ))?
        .query_row(params![account, uidl], |row| message_row(row, 0))
        .optional()?;
    let Some(mut state) = state else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT recipient, status, detail FROM recipients WHERE account = ?1 AND uidl = ?2",
    )?;
    let mut rows = stmt.query(params![account, uidl])?;
    while let Some(row) = rows.next()? {
        if let Some(status) = stored_status(row, 1)? {
            state.recipients.insert(row.get(0)?, status);
        }
    }
    Ok(Some(state))
}

/// The recipient status in columns `at` (status) and `at + 1` (detail) of `row`, as
/// [`Status::to_stored`] wrote them; `None` where the row has none (a message without
/// recipients, in a LEFT JOIN).
pub(super) fn stored_status(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> Result<Option<Status>, rusqlite::Error> {
    let status: Option<String> = row.get(at)?;
    let detail: Option<String> = row.get(at + 1)?;
    Ok(status.map(|s| Status::from_stored(&s, detail.as_deref().unwrap_or(""))))
}
