//! Finding the configured `folder` among the mailboxes a LIST returned. Users write a
//! subfolder with either separator (`INBOX/Support`, `INBOX.Support`); the server has one
//! hierarchy delimiter of its own (Dovecot's Maildir: `.`, Cyrus: `.` or `/`, Exchange: `/`).

use super::protocol::{ListEntry, decode_mailbox_name};

/// Most folder names an error message lists.
const NAMES_SHOWN: usize = 50;

/// Why the configured folder cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    /// No mailbox has that name, with either separator.
    #[error(
        "folder {wanted:?} does not exist on the server; it has: {}",
        shown(existing)
    )]
    NotFound {
        /// The folder as configured.
        wanted: String,
        /// The selectable folders the server listed, decoded.
        existing: Vec<String>,
    },
    /// More than one mailbox matches once separators are mapped (`a.b` and `a/b` both exist).
    #[error(
        "folder {wanted:?} is ambiguous on this server: {}; write it exactly as one of them",
        shown(candidates)
    )]
    Ambiguous {
        /// The folder as configured.
        wanted: String,
        /// The names it could mean.
        candidates: Vec<String>,
    },
    /// The mailbox exists but holds no messages of its own (`\Noselect`).
    #[error("folder {0:?} cannot be selected (\\Noselect: it only holds other folders)")]
    NotSelectable(String),
}

fn shown(names: &[String]) -> String {
    if names.is_empty() {
        return "(no folders)".to_owned();
    }
    let mut s = names
        .iter()
        .take(NAMES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMES_SHOWN {
        s.push_str(&format!(", ... ({} in all)", names.len()));
    }
    s
}

/// A mailbox name for people: decoded from modified UTF-7 where it is valid.
pub fn display_name(name: &[u8]) -> String {
    decode_mailbox_name(name).unwrap_or_else(|| String::from_utf8_lossy(name).into_owned())
}

/// The mailbox name to SELECT for `wanted`, as the server spells it: the listed name equal
/// to `wanted`, else the one whose parts (split at the server's delimiter) equal the parts of
/// `wanted` split at `/` and `.`. `INBOX` is matched in any letter case (RFC 3501), and is
/// always there even when the listing misses it.
pub fn resolve(wanted: &str, entries: &[ListEntry]) -> Result<Vec<u8>, FolderError> {
    let names: Vec<String> = entries.iter().map(|e| display_name(&e.name)).collect();
    let selectable = |i: usize| {
        if entries[i].selectable() {
            Ok(entries[i].name.clone())
        } else {
            Err(FolderError::NotSelectable(names[i].clone()))
        }
    };

    if let Some(i) = names.iter().position(|n| same_name(n, wanted)) {
        return selectable(i);
    }
    if wanted.eq_ignore_ascii_case("INBOX") {
        return Ok(b"INBOX".to_vec());
    }
    let wanted_parts: Vec<&str> = wanted.split(['/', '.']).collect();
    let matches: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            let parts: Vec<&str> = match entries[i].delimiter {
                Some(d) => names[i].split(d).collect(),
                None => vec![names[i].as_str()],
            };
            parts.len() == wanted_parts.len()
                && parts
                    .iter()
                    .zip(&wanted_parts)
                    .enumerate()
                    .all(|(k, (a, b))| same_part(k, a, b))
        })
        .collect();
    match matches.as_slice() {
        [i] => selectable(*i),
        [] => Err(FolderError::NotFound {
            wanted: wanted.to_owned(),
            existing: (0..entries.len())
                .filter(|&i| entries[i].selectable())
                .map(|i| names[i].clone())
                .collect(),
        }),
        many => Err(FolderError::Ambiguous {
            wanted: wanted.to_owned(),
            candidates: many.iter().map(|&i| names[i].clone()).collect(),
        }),
    }
}

/// Whole names equal; an `INBOX` first part in any letter case.
fn same_name(listed: &str, wanted: &str) -> bool {
    if listed == wanted {
        return true;
    }
    let (Some(l), Some(w)) = (listed.get(..5), wanted.get(..5)) else {
        return false;
    };
    l.eq_ignore_ascii_case("INBOX")
        && w.eq_ignore_ascii_case("INBOX")
        && listed[5..] == wanted[5..]
        && (listed.len() == 5 || !listed[5..].starts_with(|c: char| c.is_alphanumeric()))
}

/// The `k`-th parts of two names equal; the first may be `INBOX` in any letter case.
fn same_part(k: usize, a: &str, b: &str) -> bool {
    a == b || (k == 0 && a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, delimiter: char, attrs: &[&str]) -> ListEntry {
        ListEntry {
            attributes: attrs.iter().map(|a| a.to_string()).collect(),
            delimiter: Some(delimiter),
            name: name.as_bytes().to_vec(),
        }
    }

    fn dovecot_maildir() -> Vec<ListEntry> {
        vec![
            entry("INBOX", '.', &["\\HasChildren"]),
            entry("INBOX.Support", '.', &["\\HasNoChildren"]),
            entry("INBOX.Sales.2026", '.', &[]),
            entry("Archive", '.', &[]),
        ]
    }

    #[test]
    fn either_separator_maps_to_the_servers_delimiter() {
        let dot = dovecot_maildir();
        assert_eq!(resolve("INBOX/Support", &dot).unwrap(), b"INBOX.Support");
        assert_eq!(resolve("INBOX.Support", &dot).unwrap(), b"INBOX.Support");
        assert_eq!(
            resolve("inbox/Sales/2026", &dot).unwrap(),
            b"INBOX.Sales.2026"
        );
        let slash = vec![entry("INBOX", '/', &[]), entry("INBOX/Support", '/', &[])];
        assert_eq!(resolve("INBOX.Support", &slash).unwrap(), b"INBOX/Support");
        assert_eq!(resolve("INBOX/Support", &slash).unwrap(), b"INBOX/Support");
    }

    #[test]
    fn an_exact_name_wins_over_a_mapped_one() {
        // With "/" as delimiter a dot is part of a name: "Team.Support" is one folder.
        let entries = vec![
            entry("Team.Support", '/', &[]),
            entry("Team/Support", '/', &[]),
        ];
        assert_eq!(resolve("Team.Support", &entries).unwrap(), b"Team.Support");
        assert_eq!(resolve("Team/Support", &entries).unwrap(), b"Team/Support");
    }

    #[test]
    fn inbox_in_any_case_is_always_there() {
        assert_eq!(resolve("inbox", &dovecot_maildir()).unwrap(), b"INBOX");
        assert_eq!(resolve("INBOX", &[]).unwrap(), b"INBOX");
    }

    #[test]
    fn a_missing_folder_names_those_that_exist() {
        let mut entries = dovecot_maildir();
        entries.push(entry("Shared", '.', &["\\Noselect"]));
        let err = resolve("INBOX/Suport", &entries).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"INBOX/Suport\" does not exist"), "{text}");
        assert!(
            text.contains("INBOX, INBOX.Support, INBOX.Sales.2026, Archive"),
            "{text}"
        );
        assert!(
            !text.contains("Shared"),
            "a \\Noselect folder is no choice: {text}"
        );
    }

    #[test]
    fn a_noselect_folder_is_refused_by_name() {
        let entries = vec![entry("Shared", '/', &["\\NoSelect"])];
        assert_eq!(
            resolve("Shared", &entries).unwrap_err(),
            FolderError::NotSelectable("Shared".into())
        );
    }

    #[test]
    fn two_folders_that_map_alike_are_ambiguous() {
        // Two namespaces with different delimiters: "x.y" maps onto both.
        let entries = vec![entry("x/y", '/', &[]), entry("x|y", '|', &[])];
        let err = resolve("x.y", &entries).unwrap_err();
        assert_eq!(
            err,
            FolderError::Ambiguous {
                wanted: "x.y".into(),
                candidates: vec!["x/y".into(), "x|y".into()],
            }
        );
        // Written exactly, it is not.
        assert_eq!(resolve("x|y", &entries).unwrap(), b"x|y");
    }

    #[test]
    fn modified_utf7_names_are_matched_decoded() {
        let entries = vec![
            entry("INBOX", '.', &[]),
            entry("INBOX.Entw&APw-rfe", '.', &[]),
        ];
        assert_eq!(
            resolve("INBOX/Entwürfe", &entries).unwrap(),
            b"INBOX.Entw&APw-rfe"
        );
        let err = resolve("Nope", &entries).unwrap_err().to_string();
        assert!(err.contains("INBOX.Entwürfe"), "{err}");
    }
}
