//! `--output table`: the API's answers as aligned columns.

use serde_json::Value;

/// What an answer holds, for its table.
#[derive(Clone, Copy)]
pub enum Kind {
    Job,
    Jobs,
    Fleet,
    Fleets,
    Accounts,
    Account,
}

/// The answer as a table: a header and a row per item.
pub fn render(kind: Kind, value: &Value) -> String {
    let (header, rows): (&[&str], Vec<Vec<String>>) = match kind {
        Kind::Job => (JOB, vec![job(value)]),
        Kind::Jobs => (JOB, items(value).iter().map(job).collect()),
        Kind::Fleet => (FLEET, vec![fleet(value)]),
        Kind::Fleets => (FLEET, items(value).iter().map(fleet).collect()),
        Kind::Account => (ACCOUNT, vec![account(value)]),
        Kind::Accounts => (ACCOUNT, items(value).iter().map(account).collect()),
    };
    columns(header, &rows)
}

const JOB: &[&str] = &["ID", "PHASE", "ENGINE", "INSTANCE", "CREATED", "MESSAGE"];
const FLEET: &[&str] = &["ID", "PHASE", "TOTAL", "COMPLETED", "FAILED", "SKIPPED", "MESSAGE"];
const ACCOUNT: &[&str] = &["ACCOUNT", "ROLE", "REGISTERED"];

fn items(value: &Value) -> Vec<Value> {
    value["items"].as_array().cloned().unwrap_or_default()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn job(job: &Value) -> Vec<String> {
    // A created job is only its id until it is read.
    let id = job.get("id").or_else(|| job.get("job_id")).map(text).unwrap_or_default();
    let phase = match job["cancelled"].as_bool() {
        Some(true) => "cancelled".to_string(),
        _ => text(&job["status"]["phase"]),
    };
    let spec = &job["spec"];
    [id, phase, text(&spec["db_engine"]), text(&spec["db_arn"]), text(&job["created_at"]), text(&job["status"]["message"])].into()
}

fn fleet(fleet: &Value) -> Vec<String> {
    let id = fleet.get("id").or_else(|| fleet.get("fleet_job_id")).map(text).unwrap_or_default();
    let status = &fleet["status"];
    let counts = &status["counts"];
    let phase = match status["cancelled"].as_bool() {
        Some(true) => "cancelled".to_string(),
        _ => text(&status["phase"]),
    };
    [id, phase, text(&counts["total"]), text(&counts["completed"]), text(&counts["failed"]), text(&counts["skipped"])]
        .into_iter()
        .chain([text(&status["message"])])
        .collect()
}

fn account(account: &Value) -> Vec<String> {
    vec![text(&account["account_id"]), text(&account["role_arn"]), text(&account["registered_at"])]
}

fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_aligned_columns_and_a_cancel_reads_cancelled() {
        let jobs = serde_json::json!({"items": [
            {"id": "A1", "status": {"phase": "completed", "message": "done"}, "spec": {"db_engine": "postgres", "db_arn": "arn:x"}, "created_at": "2026-01-01T00:00:00Z"},
            {"id": "B22", "cancelled": true, "status": {"phase": "failed", "message": "cancelled by alice"}, "spec": null, "created_at": "2026-01-02T00:00:00Z"}
        ]});
        let table = render(Kind::Jobs, &jobs);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID   PHASE      ENGINE    INSTANCE"), "{table}");
        assert!(lines[1].starts_with("A1   completed  postgres  arn:x"), "{table}");
        assert!(lines[2].starts_with("B22  cancelled"), "{table}");
    }
}
