//! Quarantine: messages mailferry gave up on. They stay upstream, are no longer tried, are
//! announced to the postmaster once, and are listed for the operator (`mailferry state`),
//! who can try one again (`retry`) or drop it from the list (`forget`: it is left upstream
//! and never tried again).

use std::collections::HashMap;
use std::time::SystemTime;

use rusqlite::{Connection, params};

use super::sqlite::{SqliteStore, from_ms, insert_message, to_ms};
use super::{MessageState, StateError};

/// A quarantined message as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The id the operator names in `mailferry state retry ID`.
    pub id: i64,
    /// Why the message was quarantined (the first reason).
    pub reason: String,
    /// Whether the postmaster has been told.
    pub notified: bool,
    /// The operator said `forget`: no longer listed, still never tried.
    pub forgotten: bool,
}

/// What the status page shows of a quarantined message besides its reason: its Subject,
/// From and Message-ID, decoded, when the message was read (each at most 200 characters).
/// Text from a hostile sender: escape it wherever it is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headline {
    /// The decoded Subject.
    pub subject: Option<String>,
    /// The From address (with its display name, when given).
    pub from: Option<String>,
    /// The Message-ID, without the angle brackets.
    pub message_id: Option<String>,
}

impl Headline {
    /// The headline of a message's header lines (the whole message, or the From, Subject
    /// and Message-ID lines of a notice's excerpt); empty when there are none.
    pub fn of(header: &str) -> Headline {
        let clip = |s: &str| -> Option<String> {
            let s = s.trim();
            (!s.is_empty()).then(|| s.chars().take(200).collect())
        };
        let Some(m) = mail_parser::MessageParser::new().parse_headers(header.as_bytes()) else {
            return Headline::default();
        };
        let from = m
            .from()
            .and_then(|a| a.first())
            .map(|a| match (a.name(), a.address()) {
                (Some(n), Some(addr)) => format!("{n} <{addr}>"),
                (Some(n), None) => n.to_owned(),
                (None, Some(addr)) => addr.to_owned(),
                (None, None) => String::new(),
            });
        Headline {
            subject: m.subject().and_then(clip),
            from: from.as_deref().and_then(clip),
            message_id: m.message_id().and_then(clip),
        }
    }
}

/// One line of `mailferry state list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// What `mailferry state retry|forget` takes.
    pub id: i64,
    /// The account's name.
    pub account: String,
    /// The message's key in its mailbox (UIDL, or UIDVALIDITY:UID).
    pub uidl: String,
    /// When it was quarantined.
    pub since: SystemTime,
    /// Why.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the postmaster has been told.
    pub notified: bool,
    /// Its Subject, From and Message-ID, when known.
    pub headline: Headline,
}

/// Adds the quarantine of each message of `account` to its state.
pub(super) fn load(
    conn: &Connection,
    account: &str,
    out: &mut HashMap<String, MessageState>,
) -> Result<(), StateError> {
    let mut stmt = conn.prepare_cached(
        "SELECT uidl, id, reason, notified_at, forgotten_at FROM quarantine WHERE account = ?1",
    )?;
    let mut rows = stmt.query(params![account])?;
    while let Some(row) = rows.next()? {
        let uidl: String = row.get(0)?;
        if let Some(state) = out.get_mut(&uidl) {
            state.quarantine = Some(Quarantined {
                id: row.get(1)?,
                reason: row.get(2)?,
                notified: row.get::<_, Option<i64>>(3)?.is_some(),
                forgotten: row.get::<_, Option<i64>>(4)?.is_some(),
            });
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Quarantines the message (storing it if it is new); returns its quarantine. A message
    /// already quarantined keeps its first reason and id.
    pub(super) async fn add_quarantine(
        &self,
        account: &str,
        uidl: &str,
        reason: &str,
        headline: &Headline,
        now: SystemTime,
    ) -> Result<Quarantined, StateError> {
        let (account, uidl, reason) = (account.to_owned(), uidl.to_owned(), reason.to_owned());
        let h = headline.clone();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            insert_message(&tx, &account, &uidl, now)?;
            tx.prepare_cached(
                "INSERT INTO quarantine (account, uidl, since, reason, subject, sender, message_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (account, uidl) DO NOTHING",
            )?
            .execute(params![
                account,
                uidl,
                to_ms(now),
                reason,
                h.subject,
                h.from,
                h.message_id
            ])?;
            let q = tx
                .prepare_cached(
                    "SELECT id, reason, notified_at, forgotten_at FROM quarantine
                         WHERE account = ?1 AND uidl = ?2",
                )?
                .query_row(params![account, uidl], |row| {
                    Ok(Quarantined {
                        id: row.get(0)?,
                        reason: row.get(1)?,
                        notified: row.get::<_, Option<i64>>(2)?.is_some(),
                        forgotten: row.get::<_, Option<i64>>(3)?.is_some(),
                    })
                })?;
            tx.commit()?;
            Ok(q)
        })
        .await
    }

    /// The postmaster has been told about quarantine `id`.
    pub(super) async fn set_notified(&self, id: i64, now: SystemTime) -> Result<(), StateError> {
        self.run(move |conn| {
            conn.prepare_cached("UPDATE quarantine SET notified_at = ?2 WHERE id = ?1")?
                .execute(params![id, to_ms(now)])?;
            Ok(())
        })
        .await
    }

    /// The quarantined messages not forgotten, oldest first.
    pub async fn list_quarantine(&self) -> Result<Vec<QuarantineEntry>, StateError> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT q.id, q.account, q.uidl, q.since, q.reason, m.attempts, q.notified_at,
                        q.subject, q.sender, q.message_id
                 FROM quarantine q JOIN messages m ON m.account = q.account AND m.uidl = q.uidl
                 WHERE q.forgotten_at IS NULL ORDER BY q.id",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(QuarantineEntry {
                    id: row.get(0)?,
                    account: row.get(1)?,
                    uidl: row.get(2)?,
                    since: from_ms(row.get(3)?),
                    reason: row.get(4)?,
                    attempts: row.get(5)?,
                    notified: row.get::<_, Option<i64>>(6)?.is_some(),
                    headline: Headline {
                        subject: row.get(7)?,
                        from: row.get(8)?,
                        message_id: row.get(9)?,
                    },
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Takes quarantined message `id` out of quarantine to be tried again from the next pass,
    /// with its attempts reset (recipients already delivered stay delivered). False when
    /// there is no such quarantined message.
    pub async fn retry(&self, id: i64) -> Result<bool, StateError> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let changed = tx
                .prepare_cached(
                    "UPDATE messages SET attempts = 0, retry_at = NULL, last_error = NULL
                     WHERE (account, uidl) IN (SELECT account, uidl FROM quarantine WHERE id = ?1)",
                )?
                .execute(params![id])?;
            tx.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?
                .execute(params![id])?;
            tx.commit()?;
            Ok(changed > 0)
        })
        .await
    }

    /// Drops quarantined message `id` from the list: it stays upstream and is never tried
    /// again (the operator deals with it). False when there is no such listed message.
    pub async fn forget(&self, id: i64, now: SystemTime) -> Result<bool, StateError> {
        self.run(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE quarantine SET forgotten_at = ?2 WHERE id = ?1 AND forgotten_at IS NULL",
                )?
                .execute(params![id, to_ms(now)])?;
            Ok(changed > 0)
        })
        .await
    }
}
