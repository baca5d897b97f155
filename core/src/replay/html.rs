//! One self-contained HTML page (inline CSS and a few lines of script, no
//! external resources) with the token timelines, listed events, subject
//! summaries and malformed input: what a reviewer attaches to an incident
//! ticket. Every value from the input is HTML-escaped.
//!
//! Rows carry classes a reader (and the Chromium test) can rely on:
//! `tr.timeline-row` (with `flag-<name>` per flag), `tr.event-row`,
//! `tr.subject-row`, `li.finding`, `tr.detection-row` (with `data-kind`),
//! `p.minted` (who minted a token); the script adds a filter box and sets
//! `data-rows` on `<body>` to the number of rows it counted.

use std::fmt::Write as _;

use super::report::{EventList, Report, timeline_rows, token_shown};

/// Escapes text for HTML element content and attribute values.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0;width:100%}\
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}tr.flagged{background:#fde8e8}tr.drift{background:#fff4d6}\
.sev-high{color:#b00020;font-weight:bold}.sev-medium{color:#b06000}.sev-low{color:#555}\
.muted{color:#777}code{font-size:12px}#filter{margin:.5em 0;padding:4px;width:30em}";

const SCRIPT: &str = "(function(){var rows=document.querySelectorAll('tr.timeline-row,tr.event-row,tr.subject-row');\
document.body.setAttribute('data-rows',String(rows.length));\
var f=document.getElementById('filter');if(!f)return;\
f.addEventListener('input',function(){var q=f.value.toLowerCase();\
rows.forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)<0?'none':'';});});})();";

fn cell(out: &mut String, text: &str) {
    out.push_str("<td>");
    out.push_str(&escape(text));
    out.push_str("</td>");
}

/// Renders the page.
#[must_use]
pub fn render(report: &Report, events: &EventList, title: &str) -> String {
    let s = &report.stats;
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    let outside: u64 = s.outside_rbac.values().sum();
    let _ = writeln!(
        o,
        "<p id=\"stats\">{} audit events ({} evaluated), {} trail records ({} tokens); \
         <b>{} drift</b>, {} agree, {} outside RBAC, {} unrecorded; <b>{} forbidden</b>, <b>{} flagged calls</b>; {} malformed records.</p>",
        s.events,
        s.deciding - s.filtered_out,
        s.trail_entries,
        s.trail_tokens,
        s.drift,
        s.agree,
        outside,
        s.unrecorded,
        s.forbidden,
        s.flagged_calls,
        s.malformed
    );
    let snapshots = if report.snapshots.is_empty() {
        "none (decisions not evaluated)".to_owned()
    } else {
        report.snapshots.join("; ")
    };
    let _ = writeln!(o, "<p>RBAC snapshots: {}</p>", escape(&snapshots));
    o.push_str("<input id=\"filter\" type=\"search\" placeholder=\"filter rows (process, pod, IP, verb, ...)\">\n");

    o.push_str("<h2>Detections</h2>\n");
    if report.detections.is_empty() {
        o.push_str("<p class=\"muted\">No default detection fired.</p>\n");
    } else {
        o.push_str("<table><thead><tr><th>severity</th><th>kind</th><th>subject</th><th>what</th><th>events</th><th>first</th><th>last</th><th>input</th></tr></thead><tbody>\n");
        for d in &report.detections {
            let _ = write!(
                o,
                "<tr class=\"detection-row sev-{}\" data-kind=\"{}\">",
                escape(d.severity),
                escape(d.kind)
            );
            cell(&mut o, d.severity);
            cell(&mut o, d.kind);
            cell(&mut o, &d.subject);
            cell(&mut o, &d.message);
            cell(&mut o, &d.count.to_string());
            cell(&mut o, &d.first_time);
            cell(&mut o, &d.last_time);
            cell(&mut o, &d.location.to_string());
            o.push_str("</tr>\n");
        }
        o.push_str("</tbody></table>\n");
    }

    o.push_str("<h2>Token timelines</h2>\n");
    let shown: Vec<_> = report.tokens.iter().filter(|t| token_shown(t)).collect();
    if shown.is_empty() {
        o.push_str("<p class=\"muted\">No token read in the trail or flagged.</p>\n");
    }
    for t in shown {
        let _ = write!(
            o,
            "<section class=\"token\" data-token=\"{}\"><h3>Token <code>{}</code> &mdash; {}</h3>\n<p>",
            escape(&t.label()),
            escape(&t.label()),
            escape(t.subject.as_deref().unwrap_or("-"))
        );
        if let Some(p) = &t.bound_pod {
            let name = match (&p.namespace, &p.name) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                (None, Some(n)) => n.clone(),
                _ => String::new(),
            };
            let _ = write!(
                o,
                "Bound pod <b>{}</b> (uid {}). ",
                escape(&name),
                escape(&p.uid)
            );
        }
        if let Some(n) = &t.node_name {
            let _ = write!(o, "Node {}. ", escape(n));
        }
        if !t.pod_ips.is_empty() {
            let ips: Vec<&str> = t.pod_ips.iter().map(String::as_str).collect();
            let _ = write!(o, "Pod address {}. ", escape(&ips.join(", ")));
        }
        let _ = writeln!(
            o,
            "{} reads and uses in the trail, {} calls.</p>",
            t.reads_total, t.calls_total
        );
        if let Some(m) = &t.minted {
            let _ = writeln!(
                o,
                "<p class=\"minted\" data-expected=\"{}\">Minted {} by <b>{}</b> for {}{}{}{}.</p>",
                m.expected_minter,
                escape(&m.time),
                escape(&m.by),
                escape(&m.service_account),
                m.bound_to
                    .as_ref()
                    .map_or_else(String::new, |b| format!(", bound to {}", escape(b))),
                if m.audiences.is_empty() {
                    String::new()
                } else {
                    format!(", audiences {}", escape(&m.audiences.join(", ")))
                },
                m.expiration_seconds
                    .map_or_else(String::new, |s| format!(", lifetime {s} s"))
            );
        }
        if !t.findings.is_empty() {
            o.push_str("<ul>");
            for f in &t.findings {
                let _ = write!(
                    o,
                    "<li class=\"finding sev-{}\" data-kind=\"{}\">{}: {}</li>",
                    escape(f.severity),
                    escape(f.kind),
                    escape(f.kind),
                    escape(&f.message)
                );
            }
            o.push_str("</ul>\n");
        }
        o.push_str("<table><thead><tr><th>time</th><th>what</th><th>who / from</th><th>detail</th><th>flags</th></tr></thead><tbody>\n");
        for r in timeline_rows(t) {
            let mut class = String::from("timeline-row");
            for f in &r.flags {
                class.push_str(" flag-");
                class.push_str(&escape(f));
            }
            if r.flags.iter().any(|f| f != "forbidden") {
                class.push_str(" flagged");
            }
            let _ = write!(o, "<tr class=\"{class}\" data-what=\"{}\">", r.what);
            cell(&mut o, r.time);
            cell(&mut o, r.what);
            cell(&mut o, &r.actor);
            cell(&mut o, &r.detail);
            cell(&mut o, &r.flags.join(", "));
            o.push_str("</tr>\n");
        }
        o.push_str("</tbody></table></section>\n");
    }

    o.push_str("<h2>Events</h2>\n");
    if events.kept.is_empty() {
        o.push_str("<p class=\"muted\">No drift, forbidden or flagged call.</p>\n");
    } else {
        o.push_str("<table><thead><tr><th>time</th><th>user</th><th>verb</th><th>target</th><th>code</th><th>source</th><th>cluster</th><th>snapshot</th><th>outcome</th><th>flags</th><th>why</th><th>input</th></tr></thead><tbody>\n");
        for e in &events.kept {
            let class = match e.outcome.as_str() {
                "drift" => "event-row drift",
                _ if e.flags.iter().any(|f| *f != "forbidden") => "event-row flagged",
                _ => "event-row",
            };
            let _ = write!(
                o,
                "<tr class=\"{class}\" data-outcome=\"{}\">",
                e.outcome.as_str()
            );
            cell(&mut o, &e.time);
            let user = match &e.impersonated_by {
                Some(by) => format!("{} (impersonated by {by})", e.user),
                None => e.user.clone(),
            };
            cell(&mut o, &user);
            cell(&mut o, &e.verb);
            cell(&mut o, &e.target());
            cell(
                &mut o,
                &e.code.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            );
            cell(&mut o, &e.source_ips.join(", "));
            cell(&mut o, e.recorded_text());
            cell(&mut o, e.replayed_text());
            cell(&mut o, e.outcome.as_str());
            cell(&mut o, &e.flags.join(", "));
            cell(&mut o, &e.explanation);
            cell(&mut o, &e.location.to_string());
            o.push_str("</tr>\n");
        }
        o.push_str("</tbody></table>\n");
        if events.omitted > 0 {
            let _ = writeln!(
                o,
                "<p class=\"muted\">{} more events not shown.</p>",
                events.omitted
            );
        }
    }

    o.push_str("<h2>Subjects</h2>\n<table><thead><tr><th>subject</th><th>calls</th><th>denied</th><th>drift</th><th>verbs/resources</th><th>dangerous used</th><th>dangerous held</th><th>hints</th></tr></thead><tbody>\n");
    for sub in &report.subjects {
        let _ = write!(
            o,
            "<tr class=\"subject-row\" data-subject=\"{}\">",
            escape(&sub.user)
        );
        cell(&mut o, &sub.user);
        cell(&mut o, &sub.calls.to_string());
        cell(&mut o, &sub.denied.to_string());
        cell(&mut o, &sub.drift.to_string());
        let mut top: Vec<(&String, &u64)> = sub.by_verb_resource.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = top
            .iter()
            .take(6)
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect();
        cell(&mut o, &top.join("; "));
        let used: Vec<String> = sub.used.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        cell(&mut o, &used.join("; "));
        let held: Vec<String> = sub
            .held
            .iter()
            .map(|h| format!("{} {} ({})", h.check, h.scope, h.binding))
            .collect();
        cell(&mut o, &held.join("; "));
        cell(&mut o, &sub.hints.join(" "));
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");

    if report.problems.count > 0 {
        let _ = writeln!(
            o,
            "<h2>Malformed input</h2>\n<p>{} records skipped.</p><ul>",
            report.problems.count
        );
        for m in &report.problems.kept {
            let _ = write!(
                o,
                "<li class=\"malformed\"><code>{}</code>: {}</li>",
                escape(&m.location.to_string()),
                escape(&m.error)
            );
        }
        o.push_str("</ul>\n");
    }
    let _ = write!(o, "<script>{SCRIPT}</script>\n</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
