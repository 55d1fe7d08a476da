//! The report of `mailferry test-connection`, apart from the I/O that fills it: one section
//! per account and one for the relay, each a list of steps with their outcome in words;
//! shown as text (`Display`) or as JSON for scripts ([`Report::to_json`]).

use std::fmt;

use serde::Serialize;

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It worked.
    Ok,
    /// It worked, with something the administrator should know (no encryption, an
    /// unverified certificate).
    Warning,
    /// It failed: the detail says why, in words.
    Failed,
    /// Not tried, because an earlier step failed.
    Skipped,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        }
    }
}

/// One step: `resolve`, `connect`, `tls`, `capabilities`, `authenticate`, `mailbox`,
/// `ehlo`, `starttls`, `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The step's name.
    pub step: &'static str,
    /// Its outcome.
    pub status: Status,
    /// What it found, or what is wrong and what to do.
    pub detail: String,
}

impl Step {
    /// A step that worked.
    pub fn ok(step: &'static str, detail: impl Into<String>) -> Step {
        Step::new(step, Status::Ok, detail)
    }

    /// A step that failed.
    pub fn failed(step: &'static str, detail: impl Into<String>) -> Step {
        Step::new(step, Status::Failed, detail)
    }

    /// A step not tried.
    pub fn skipped(step: &'static str) -> Step {
        Step::new(step, Status::Skipped, "not tried: an earlier step failed")
    }

    /// A step with the given outcome.
    pub fn new(step: &'static str, status: Status, detail: impl Into<String>) -> Step {
        Step {
            step,
            status,
            detail: detail.into(),
        }
    }
}

/// The steps of one account, or of the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    /// `account` or `relay`.
    pub kind: &'static str,
    /// The account's name, or the relay's `host:port`.
    pub name: String,
    /// What is tested: `pop3 pop.example.net:995 as user@example.net`.
    pub target: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Section {
    /// No step failed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.status != Status::Failed)
    }
}

/// Every section tested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The accounts, in the configuration's order, then the relay.
    pub sections: Vec<Section>,
}

impl Report {
    /// No step of any section failed: exit status 0.
    pub fn passed(&self) -> bool {
        self.sections.iter().all(Section::passed)
    }

    /// The report as one JSON object: `{"passed": bool, "sections": [{"kind", "name",
    /// "target", "passed", "steps": [{"step", "status", "detail"}]}]}`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct SectionJson<'a> {
            #[serde(flatten)]
            section: &'a Section,
            passed: bool,
        }
        #[derive(Serialize)]
        struct ReportJson<'a> {
            passed: bool,
            sections: Vec<SectionJson<'a>>,
        }
        let json = ReportJson {
            passed: self.passed(),
            sections: self
                .sections
                .iter()
                .map(|section| SectionJson {
                    section,
                    passed: section.passed(),
                })
                .collect(),
        };
        // Serialising strings, booleans and lists cannot fail.
        serde_json::to_string_pretty(&json).unwrap_or_default()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for section in &self.sections {
            writeln!(f, "{} {}: {}", section.kind, section.name, section.target)?;
            for step in &section.steps {
                writeln!(
                    f,
                    "  {:<8} {:<13} {}",
                    step.status.word(),
                    step.step,
                    step.detail
                )?;
            }
        }
        let failed: Vec<String> = self
            .sections
            .iter()
            .filter(|s| !s.passed())
            .map(|s| format!("{} {}", s.kind, s.name))
            .collect();
        if failed.is_empty() {
            write!(f, "result: every check passed")
        } else {
            write!(f, "result: FAILED: {}", failed.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            sections: vec![
                Section {
                    kind: "account",
                    name: "a".into(),
                    target: "pop3 h:995".into(),
                    steps: vec![
                        Step::ok("connect", "127.0.0.1:995"),
                        Step::failed("authenticate", "the server refused \"the\" password"),
                        Step::skipped("mailbox"),
                    ],
                },
                Section {
                    kind: "relay",
                    name: "127.0.0.1:25".into(),
                    target: "smtp".into(),
                    steps: vec![Step::ok("ehlo", "fine")],
                },
            ],
        }
    }

    #[test]
    fn text_names_each_step_and_the_failed_sections() {
        let text = sample().to_string();
        assert!(text.contains("account a: pop3 h:995\n"), "{text}");
        assert!(
            text.contains("  FAILED   authenticate  the server refused"),
            "{text}"
        );
        assert!(text.contains("  skipped  mailbox"), "{text}");
        assert!(text.ends_with("result: FAILED: account a"), "{text}");
        assert!(!sample().passed());
    }

    #[test]
    fn json_carries_every_step_and_the_verdicts() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["sections"][0]["passed"], false);
        assert_eq!(json["sections"][1]["passed"], true);
        assert_eq!(json["sections"][0]["steps"][1]["status"], "failed");
        assert_eq!(
            json["sections"][0]["steps"][1]["detail"],
            "the server refused \"the\" password"
        );
        assert_eq!(json["sections"][1]["kind"], "relay");
    }
}
