//! `accounts_dir`: more accounts, one YAML file each, so that a provider's tooling writes one
//! file per customer. Each file holds the keys of one item of `accounts:` and is checked by
//! the same code (`load/account.rs`), its problems reported in its own file with line and
//! column; a name or mailbox already used, in the main file or an earlier file, is refused.
//! Files are read in name order; only `*.yaml` and `*.yml`, hidden files ignored.

use std::path::{Path, PathBuf};

use super::{AccountConfig, Config, ConfigError, KeyAt, Source, StateBackend, load};
use crate::address::{Address, DomainPattern};

/// One file of the configuration: its problems so far and what it names outside itself.
pub(super) struct Part {
    /// The file, as named in errors.
    pub(super) file: String,
    /// Its problems.
    pub(super) errors: Vec<ConfigError>,
    /// What it names outside its text, for the resolve step.
    pub(super) sources: Vec<Source>,
}

/// An account already taken in, for duplicates: its name, mailbox and where it is written
/// (`file:line`).
pub(super) struct Known {
    name: String,
    mailbox: Option<String>,
    at: String,
}

impl Known {
    /// The accounts of `accounts:` in `file` (their mailboxes from `config`, when it loaded).
    pub(super) fn of_main(
        file: &str,
        names: &[(String, usize)],
        config: Option<&Config>,
    ) -> Vec<Known> {
        names
            .iter()
            .map(|(name, line)| Known {
                name: name.clone(),
                mailbox: config
                    .and_then(|c| c.account(name))
                    .map(AccountConfig::mailbox_id),
                at: format!("{file}:{line}"),
            })
            .collect()
    }

    /// The accounts of a loaded configuration (`file` names it).
    pub(super) fn of_config(config: &Config, file: &str) -> Vec<Known> {
        (config.accounts.iter())
            .map(|a| Known {
                name: a.name.clone(),
                mailbox: Some(a.mailbox_id()),
                at: file.to_owned(),
            })
            .collect()
    }
}

/// Reads every account file of `dir` (named by `key` in `main_file`) into `config` (`None`
/// when the main file has problems: the files are still checked, for theirs): one [`Part`]
/// per file, and one for `main_file` when the directory itself is the problem.
pub(super) fn read(
    dir: &Path,
    key: &KeyAt,
    main_file: &str,
    known: &mut Vec<Known>,
    targets: Option<&(Vec<DomainPattern>, Address)>,
    mut config: Option<&mut Config>,
) -> Vec<Part> {
    let at_key = |message: String| Part {
        file: main_file.to_owned(),
        errors: vec![ConfigError {
            file: main_file.to_owned(),
            line: key.line,
            column: key.column,
            message,
        }],
        sources: Vec::new(),
    };
    let files = match account_files(dir) {
        Ok(files) => files,
        Err(e) => {
            return vec![at_key(format!(
                "{}: cannot read the directory {}: {e}",
                key.name,
                dir.display()
            ))];
        }
    };
    let mut parts = Vec::new();
    for path in &files {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => parts.push(add(&text, &file, known, targets, config.as_deref_mut())),
            Err(e) => parts.push(Part {
                errors: vec![ConfigError {
                    file: file.clone(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read the file: {e}"),
                }],
                file,
                sources: Vec::new(),
            }),
        }
    }
    // With PostgreSQL the accounts table may hold them all.
    if let Some(config) = config
        && config.accounts.is_empty()
        && files.is_empty()
        && config.state == StateBackend::Sqlite
    {
        parts.push(at_key(format!(
            "{}: no account file (*.yaml, *.yml) in {} and accounts: lists none: nothing to collect",
            key.name,
            dir.display()
        )));
    }
    parts
}

/// The account files of `dir`, in name order: `*.yaml` and `*.yml`, not hidden, files (or
/// links to files) only.
fn account_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Checks `text` (in `file`) as one account and adds it to `config` (when there is one and
/// the account is valid); a name or mailbox in `known` is refused. The account's [`Part`].
pub(super) fn add(
    text: &str,
    file: &str,
    known: &mut Vec<Known>,
    targets: Option<&(Vec<DomainPattern>, Address)>,
    config: Option<&mut Config>,
) -> Part {
    let index = config.as_ref().map_or(known.len(), |c| c.accounts.len());
    let checked = load::check_account(text, file, index, targets);
    let mut errors = checked.errors;
    if let Some(account) = checked.account {
        let mailbox = account.mailbox_id();
        let clash = known.iter().find_map(|k| {
            if k.name == account.name {
                Some(format!(
                    "duplicate account name `{}` (also in {})",
                    account.name, k.at
                ))
            } else if k.mailbox.as_deref() == Some(mailbox.as_str()) {
                // Two accounts on one mailbox would deliver it twice (and share its state).
                Some(format!(
                    "accounts {} and {} collect the same mailbox ({mailbox}): each mailbox once ({} is in {})",
                    k.name, account.name, k.name, k.at
                ))
            } else {
                None
            }
        });
        match clash {
            Some(message) => errors.push(ConfigError {
                file: file.to_owned(),
                line: checked.name_line,
                column: 1,
                message,
            }),
            None => {
                known.push(Known {
                    name: account.name.clone(),
                    mailbox: Some(mailbox),
                    at: format!("{file}:{}", checked.name_line),
                });
                if let Some(config) = config {
                    config.accounts.push(account);
                }
            }
        }
    }
    Part {
        file: file.to_owned(),
        errors,
        sources: checked.sources,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, ConfigErrors, from_yaml_str};

    /// The main file, in `dir`, with `accounts_dir: accounts.d` and `accounts` (a YAML list).
    fn main_file(dir: &Path, accounts: &str) -> String {
        format!(
            "state_dir: {}\nrelay:\n  host: mail.corp.local\ndomains: [example.com]\npostmaster: postmaster@corp.local\naccounts_dir: accounts.d\naccounts: {accounts}\n",
            dir.join("state").display()
        )
    }

    fn account(name: &str, user: &str) -> String {
        format!(
            "name: {name}\nprotocol: pop3\nhost: pop.provider.net\nusername: {user}\npassword: pw-{name}\n"
        )
    }

    /// A directory holding `accounts.d` with `files` (name, text).
    fn with_files(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let accounts = dir.path().join("accounts.d");
        std::fs::create_dir(&accounts).unwrap();
        for (name, text) in files {
            std::fs::write(accounts.join(name), text).unwrap();
        }
        dir
    }

    fn load(dir: &Path, accounts: &str) -> Result<crate::config::Config, ConfigErrors> {
        let file = dir.join("mailferry.yaml").display().to_string();
        from_yaml_str(&main_file(dir, accounts), &file)
    }

    fn refused(dir: &Path, accounts: &str) -> Vec<ConfigError> {
        match load(dir, accounts) {
            Ok(c) => panic!("accepted {} account(s)", c.accounts.len()),
            Err(ConfigErrors(errors)) => errors,
        }
    }

    #[test]
    fn accounts_follow_the_main_file_in_name_order_hidden_and_other_files_ignored() {
        let dir = with_files(&[
            ("b.yml", &account("bravo", "b@example.com")),
            ("a.yaml", &account("alpha", "a@example.com")),
            (".c.yaml", &account("hidden", "h@example.com")),
            ("d.yaml~", &account("backup", "x@example.com")),
            ("e.txt", "not: yaml: at all:"),
        ]);
        std::fs::create_dir(dir.path().join("accounts.d/f.yaml")).unwrap();
        let main = "[{name: main, protocol: pop3, host: pop.provider.net, username: m@example.com, password: pw}]";
        let config = load(dir.path(), main).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["main", "alpha", "bravo"]);
        assert_eq!(config.accounts[2].password.expose(), "pw-bravo");
        assert_eq!(config.accounts_dir, Some(dir.path().join("accounts.d")));
    }

    #[test]
    fn the_directory_alone_may_hold_every_account_and_relative_paths_start_there() {
        let text = account("alpha", "a@example.com")
            .replace("password: pw-alpha", "password_file: alpha.pw");
        let dir = with_files(&[("alpha.yaml", &text), ("alpha.pw", "from-file\n")]);
        let config = load(dir.path(), "[]").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.accounts.len(), 1);
        assert_eq!(config.accounts[0].password.expose(), "from-file");
    }

    #[test]
    fn each_files_problems_are_reported_with_its_path_and_line_all_at_once() {
        let bad_port = account("alpha", "a@example.com") + "port: 99999\n";
        let unknown = format!(
            "# customer 42\n{}pol_interval: 5m\n",
            account("bravo", "b@example.com")
        );
        let missing_pw = account("gamma", "g@example.com")
            .replace("password: pw-gamma\n", "password_file: gamma.pw\n");
        let dir = with_files(&[
            ("a.yaml", &bad_port),
            ("b.yaml", &unknown),
            ("c.yaml", &missing_pw),
        ]);
        let errors = refused(dir.path(), "[]");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let d = dir.path().join("accounts.d");
        assert_eq!(errors.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with(&format!(
                "{}:6:7: accounts[alpha].port",
                d.join("a.yaml").display()
            )),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with(&format!(
                "{}:7:1: unknown key `pol_interval` in accounts[bravo]",
                d.join("b.yaml").display()
            )),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with(&format!(
                "{}:5:16: accounts[gamma].password_file: cannot read",
                d.join("c.yaml").display()
            )),
            "{shown:#?}"
        );
        for line in &shown {
            assert!(!line.contains("pw-"), "a password in {line}");
        }
    }

    #[test]
    fn a_name_or_mailbox_used_twice_is_refused_naming_both_places() {
        let main = "\n  - name: alpha\n    protocol: pop3\n    host: pop.provider.net\n    username: a@example.com\n    password: pw";
        let dir = with_files(&[
            ("1.yaml", &account("alpha", "other@example.com")),
            ("2.yaml", &account("bravo", "a@example.com")),
            ("3.yaml", &account("charlie", "c@example.com")),
            (
                "4.yaml",
                &format!("# again\n{}", account("charlie", "d@example.com")),
            ),
        ]);
        let errors = refused(dir.path(), main);
        let main_file = dir.path().join("mailferry.yaml").display().to_string();
        let d = dir.path().join("accounts.d");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                format!(
                    "{}:1:1: duplicate account name `alpha` (also in {main_file}:8)",
                    d.join("1.yaml").display()
                ),
                format!(
                    "{}:1:1: accounts alpha and bravo collect the same mailbox (pop3://a@example.com@pop.provider.net): each mailbox once (alpha is in {main_file}:8)",
                    d.join("2.yaml").display()
                ),
                format!(
                    "{}:2:1: duplicate account name `charlie` (also in {}:1)",
                    d.join("4.yaml").display(),
                    d.join("3.yaml").display()
                ),
            ]
        );
    }

    #[test]
    fn a_missing_or_empty_directory_is_reported_at_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let errors = refused(dir.path(), "[]");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!((errors[0].line, errors[0].column), (6, 15));
        assert!(
            errors[0]
                .message
                .starts_with("accounts_dir: cannot read the directory"),
            "{}",
            errors[0]
        );

        let dir = with_files(&[("notes.txt", "")]);
        let errors = refused(dir.path(), "[]");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0]
                .message
                .contains("no account file (*.yaml, *.yml)"),
            "{}",
            errors[0]
        );
        // An empty file is one with a problem, not an account less.
        let dir = with_files(&[("empty.yaml", "")]);
        let errors = refused(dir.path(), "[]");
        assert!(
            errors[0].message.starts_with("the file is empty"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn accounts_from_elsewhere_are_checked_the_same_way_and_named_by_their_origin() {
        use crate::config::{AccountText, with_accounts};
        let dir = with_files(&[("alpha.yaml", &account("alpha", "a@example.com"))]);
        let config = load(dir.path(), "[]").unwrap();
        let text = |origin: &str, text: String| AccountText {
            origin: origin.to_owned(),
            text,
        };
        let added = with_accounts(
            config.clone(),
            "m.yaml",
            &[text("table[bravo]", account("bravo", "b@example.com"))],
        )
        .unwrap();
        assert_eq!(added.accounts[1].name, "bravo");
        assert_eq!(added.accounts[1].password.expose(), "pw-bravo");
        let refused = with_accounts(
            config,
            "m.yaml",
            &[
                text("table[alpha]", account("alpha", "x@example.com")),
                text("table[c]", account("c", "c@example.com") + "port: 0\n"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            refused,
            "table[alpha]:1:1: duplicate account name `alpha` (also in m.yaml)\n\
             table[c]:6:7: accounts[c].port: 0 is outside 1..=65535"
        );
    }

    #[test]
    fn without_accounts_dir_accounts_are_still_required() {
        let text = "state_dir: /s\nrelay: {host: h}\ndomains: [example.com]\npostmaster: p@example.com\naccounts: []\n";
        let err = from_yaml_str(text, "m.yaml").unwrap_err().to_string();
        assert!(err.contains("accounts is empty"), "{err}");
    }
}
