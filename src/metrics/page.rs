//! Pure: the status page, server-rendered HTML without script. Every value that comes from
//! outside the program (a server's error text, a quarantined message's Subject and From)
//! goes through [`escape`].

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::status::{AccountStatus, State};
use crate::state::QuarantineEntry;

/// `text` made safe as HTML text or a quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-12-05 16:40:07 UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (y, m, d) = crate::relay::civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A time and how far from `now` it is: `2026-12-05 16:40:07 UTC (3 min ago)`.
fn when(t: Option<SystemTime>, now: SystemTime) -> String {
    let Some(t) = t else {
        return "—".to_owned();
    };
    format!("{} ({})", utc(t), from_now(t, now))
}

/// How far `t` is from `now`: `12 s ago`, `in 3 min`, `5 h ago` (also `mailferry status`).
pub(crate) fn from_now(t: SystemTime, now: SystemTime) -> String {
    let (secs, ago) = match now.duration_since(t) {
        Ok(d) => (d.as_secs(), true),
        Err(e) => (e.duration().as_secs(), false),
    };
    let span = match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    };
    if ago {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

fn count(n: Option<usize>) -> String {
    n.map_or("—".to_owned(), |n| n.to_string())
}

/// The page: readiness, each account, the quarantined messages (or why they cannot be
/// listed).
pub fn render(
    accounts: &[AccountStatus],
    quarantine: &Result<Vec<QuarantineEntry>, String>,
    ready: Result<(), Vec<&'static str>>,
    now: SystemTime,
) -> String {
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <title>mailferry status</title><style>\
         body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}\
         th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}\
         th{background:#eee}.idle{color:#060}.failing,.backing-off{color:#a00}.polling{color:#046}\
         </style></head><body>\n<h1>mailferry</h1>\n",
    );
    let _ = writeln!(h, "<p id=\"now\">{}</p>", utc(now));
    match ready {
        Ok(()) => h.push_str("<p id=\"ready\">Ready: delivering.</p>\n"),
        Err(why) => {
            let _ = writeln!(
                h,
                "<p id=\"ready\" class=\"failing\">Not ready: {}.</p>",
                escape(&why.join("; "))
            );
        }
    }
    h.push_str("<h2>Accounts</h2>\n<table id=\"accounts\"><tr><th>Account</th><th>Mailbox</th><th>State</th>\
                <th>Last pass</th><th>Next pass</th><th>Waiting upstream</th><th>Kept (retention)</th>\
                <th>Quarantined</th></tr>\n");
    for a in accounts {
        let class = a.state.word().replace(' ', "-");
        let mut state = escape(a.state.word());
        if let Some(why) = a.why.as_deref().filter(|_| a.state != State::Idle) {
            let _ = write!(state, ": {}", escape(why));
        }
        let last = match (&a.last_report, a.state) {
            (Some(report), State::Idle) => format!(
                "{}<br><small>{}</small>",
                escape(&when(a.last_finished, now)),
                escape(report)
            ),
            _ => escape(&when(a.last_finished.or(a.last_started), now)),
        };
        let _ = writeln!(
            h,
            "<tr class=\"account\"><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td><td>{last}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.name),
            escape(&a.server),
            escape(&when(a.next_at, now)),
            count(a.waiting),
            count(a.kept),
            count(a.quarantined)
        );
    }
    h.push_str("</table>\n<h2>Quarantined messages</h2>\n");
    match quarantine {
        Err(e) => {
            let _ = writeln!(
                h,
                "<p class=\"failing\">The state store cannot list them: {}</p>",
                escape(e)
            );
        }
        Ok(list) if list.is_empty() => h.push_str("<p id=\"quarantine-empty\">None.</p>\n"),
        Ok(list) => {
            h.push_str(
                "<table id=\"quarantine\"><tr><th>Id</th><th>Account</th><th>Since</th><th>Reason</th>\
                 <th>Subject</th><th>From</th><th>Message-ID</th><th>Attempts</th><th>Postmaster told</th></tr>\n",
            );
            for q in list {
                let opt = |s: &Option<String>| escape(s.as_deref().unwrap_or("—"));
                let _ = writeln!(
                    h,
                    "<tr class=\"quarantined\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td class=\"subject\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    q.id,
                    escape(&q.account),
                    escape(&utc(q.since)),
                    escape(&q.reason),
                    opt(&q.headline.subject),
                    opt(&q.headline.from),
                    opt(&q.headline.message_id),
                    q.attempts,
                    if q.notified { "yes" } else { "not yet" }
                );
            }
            h.push_str(
                "</table>\n<p><small>Act on them with <code>mailferry state retry ID</code> or \
                 <code>mailferry state forget ID</code>.</small></p>\n",
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Headline;

    #[test]
    fn hostile_text_is_shown_as_text() {
        let q = QuarantineEntry {
            id: 3,
            account: "acct".into(),
            uidl: "u1".into(),
            since: UNIX_EPOCH,
            reason: "loop <b>".into(),
            attempts: 1,
            notified: false,
            headline: Headline {
                subject: Some("<script>alert('x')</script>&\"".into()),
                from: Some("Eve <eve@x.test>".into()),
                message_id: None,
            },
        };
        let page = render(&[], &Ok(vec![q]), Ok(()), UNIX_EPOCH);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        assert!(page.contains("Eve &lt;eve@x.test&gt;"));
        assert!(page.contains("loop &lt;b&gt;"));
        assert!(page.contains("1970-01-01 00:00:00 UTC"));
    }
}
