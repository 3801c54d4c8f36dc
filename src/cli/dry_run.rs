//! `paas clusters launch … --dry-run`: the server's dry-run answer, for people. The
//! summary first, then a table of nodes (runs of nodes with the same fit on one line), then
//! the changes that would make the cluster fit.

use serde_json::Value;

use super::table;

/// The readable form of a dry-run answer (`POST …?dry_run=true`).
pub fn render(v: &Value) -> String {
    let mut out = format!("dry run: {}\n", text(&v["summary"]));
    let rows = rows(v["nodes"].as_array().map(Vec::as_slice).unwrap_or_default());
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&table::render(
            &["NODES", "NEEDS (WITH EXECUTOR)", "AGENT"],
            &rows,
        ));
    }
    if let Some(changes) = v["changes"].as_array().filter(|c| !c.is_empty()) {
        out.push_str("\nwould fit with any one of:\n");
        for c in changes {
            out.push_str(&format!(
                "  --opt {}={}   {}\n",
                text(&c["option"]),
                num(&c["to"]),
                text(&c["text"])
            ));
        }
    }
    out
}

/// Whether the answer says the cluster would not fit (placement evaluated, some node
/// without an agent).
pub fn does_not_fit(v: &Value) -> bool {
    v["fits"] == Value::Bool(false)
}

/// One row per run of consecutive nodes with the same needs and the same fit.
fn rows(nodes: &[Value]) -> Vec<Vec<String>> {
    let mut out: Vec<(Vec<String>, usize)> = Vec::new();
    let mut first_of_run = String::new();
    for n in nodes {
        let name = text(&n["node"]);
        let cells = [needs(&n["needs"]), fit(n)];
        match out.last_mut() {
            Some((row, count)) if row[1..] == cells => {
                *count += 1;
                row[0] = format!("{first_of_run} … {name} ({})", *count);
            }
            _ => {
                first_of_run = name.clone();
                let mut row = vec![name];
                row.extend(cells);
                out.push((row, 1));
            }
        }
    }
    out.into_iter().map(|(row, _)| row).collect()
}

/// `0.15 cpus, 96 MB mem, 2 ports`.
fn needs(n: &Value) -> String {
    let mut s = format!("{} cpus, {} MB mem", num(&n["cpus"]), num(&n["mem_mb"]));
    if n["disk_mb"].as_f64().is_some_and(|d| d > 0.0) {
        s.push_str(&format!(", {} MB disk", num(&n["disk_mb"])));
    }
    s.push_str(&format!(", {} ports", num(&n["ports"])));
    s
}

/// The agent, or `none: closest …`.
fn fit(n: &Value) -> String {
    if n["fit"] == "agent" {
        return format!("{} ({})", text(&n["agent_id"]), text(&n["hostname"]));
    }
    let c = &n["closest"];
    if c.is_null() {
        return "none: no agent seen".into();
    }
    let short: Vec<String> = c["short"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let unit = match s["resource"].as_str() {
                Some("mem") => " MB mem",
                Some("disk") => " MB disk",
                Some("cpus") => " cpus",
                _ => " ports",
            };
            format!("{} of {}{unit}", num(&s["available"]), num(&s["needed"]))
        })
        .collect();
    format!(
        "none: closest {} ({}) has {}",
        text(&c["agent_id"]),
        text(&c["hostname"]),
        short.join(", ")
    )
}

/// A number as people write it: `932`, not `932.0`.
fn num(v: &Value) -> String {
    v.as_f64().map_or_else(|| text(v), |f| f.to_string())
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_reads_as_a_summary_a_table_and_the_changes() {
        let node = |name: &str, fit: Value| {
            let mut n = json!({"node": name, "needs": {"cpus": 0.15, "mem_mb": 932.0, "disk_mb": 0.0, "ports": 2}});
            n.as_object_mut()
                .unwrap()
                .extend(fit.as_object().unwrap().clone());
            n
        };
        let on = |a: &str| json!({"fit": "agent", "agent_id": a, "hostname": "h"});
        let none = json!({"fit": "none", "closest": {"agent_id": "a1", "hostname": "h",
            "short": [{"resource": "mem", "needed": 932.0, "available": 92.0}]}, "why": "…"});
        let v = json!({
            "fits": false,
            "summary": "does not fit: …",
            "nodes": [node("node0", on("a0")), node("node1", on("a1")), node("node2", none.clone()),
                      node("node3", none.clone()), node("node4", none)],
            "changes": [{"option": "size", "to": 2, "text": "size 2 instead of 5 (2 nodes)"}]
        });
        assert!(does_not_fit(&v));
        assert_eq!(
            render(&v),
            "dry run: does not fit: …\n\
             \n\
             NODES              NEEDS (WITH EXECUTOR)           AGENT\n\
             node0              0.15 cpus, 932 MB mem, 2 ports  a0 (h)\n\
             node1              0.15 cpus, 932 MB mem, 2 ports  a1 (h)\n\
             node2 … node4 (3)  0.15 cpus, 932 MB mem, 2 ports  none: closest a1 (h) has 92 of 932 MB mem\n\
             \n\
             would fit with any one of:\n  --opt size=2   size 2 instead of 5 (2 nodes)\n"
        );
        assert!(!does_not_fit(&json!({"fits": null})));
    }
}
