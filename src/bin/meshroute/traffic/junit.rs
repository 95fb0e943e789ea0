//! JUnit XML for CI: one `<testsuite>` a tests file, one `<testcase>` a case, its failures as
//! one `<failure>` element.

use super::Outcome;

pub fn render(report: &[(String, Vec<Outcome>)]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"meshroute test\">\n");
    for (file, outcomes) in report {
        let failures = outcomes.iter().filter(|o| !o.failures.is_empty()).count();
        let time: f64 = outcomes.iter().map(|o| o.elapsed.as_secs_f64()).sum();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">\n",
            xml(file),
            outcomes.len()
        ));
        for o in outcomes {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml(file),
                xml(&o.name),
                o.elapsed.as_secs_f64()
            ));
            if o.failures.is_empty() {
                out.push_str("/>\n");
            } else {
                let text = o.failures.join("\n");
                let first = o.failures.first().map(String::as_str).unwrap_or("");
                out.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml(first.lines().next().unwrap_or("")),
                    xml(&text)
                ));
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
