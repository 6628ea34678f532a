//! The embedded store of the local server: one SQLite file, written in
//! transactions with a write-ahead log and full sync, so a crash loses nothing
//! that was acknowledged.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use super::*;

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS jobs (
    org TEXT NOT NULL, id TEXT NOT NULL, sort TEXT NOT NULL, phase TEXT NOT NULL,
    db_arn TEXT NOT NULL, db_engine TEXT NOT NULL, record TEXT NOT NULL, expires_at INTEGER,
    PRIMARY KEY (org, id));
CREATE INDEX IF NOT EXISTS jobs_by_org ON jobs (org, sort);
CREATE TABLE IF NOT EXISTS fleets (
    org TEXT NOT NULL, id TEXT NOT NULL, sort TEXT NOT NULL, phase TEXT NOT NULL, record TEXT NOT NULL, expires_at INTEGER,
    PRIMARY KEY (org, id));
CREATE TABLE IF NOT EXISTS fleet_not_started (
    org TEXT NOT NULL, fleet_id TEXT NOT NULL, instance_arn TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (org, fleet_id, instance_arn));
CREATE TABLE IF NOT EXISTS server_locks (
    server TEXT PRIMARY KEY, org TEXT NOT NULL, job_id TEXT NOT NULL, lease_until INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    org TEXT NOT NULL, account TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (org, account));
CREATE TABLE IF NOT EXISTS idempotency (
    org TEXT NOT NULL, key TEXT NOT NULL, job_id TEXT NOT NULL, body_hash TEXT NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (org, key));
CREATE TABLE IF NOT EXISTS resources (org TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (org, name));
CREATE TABLE IF NOT EXISTS server_owners (resource_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (id TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provisioned (org TEXT NOT NULL, db_arn TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (org, db_arn));
";

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl SqliteStore {
    /// Opens (or creates) the store. It holds passwords: its directory is made
    /// 0700 and its files 0600, an existing store's modes tightened.
    pub fn open(path: &Path) -> StoreResult<Self> {
        private(path).map_err(unavailable)?;
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs blocking SQLite work off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| unavailable("the store lock is poisoned"))?;
            work(&mut conn)
        })
        .await
        .map_err(unavailable)?
    }

    /// Runs one statement with `values`: how many rows it changed.
    async fn execute(&self, sql: &'static str, values: Vec<Sql>) -> StoreResult<usize> {
        self.with(move |conn| conn.execute(sql, params_from_iter(values)).map_err(unavailable)).await
    }

    /// The record of the one row `sql` selects with `keys`, parsed.
    async fn record<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        keys: Vec<String>,
    ) -> StoreResult<Option<T>> {
        let text = self.text(sql, keys).await?;
        text.map(|text| from_json(&text)).transpose()
    }

    /// The text of the one row `sql` selects with `keys`.
    async fn text(&self, sql: &'static str, keys: Vec<String>) -> StoreResult<Option<String>> {
        self.with(move |conn| conn.query_row(sql, params_from_iter(keys), |row| row.get(0)).optional().map_err(unavailable)).await
    }

    /// The records of every row `sql` selects with `keys`, parsed.
    async fn records<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        sql: String,
        keys: Vec<String>,
    ) -> StoreResult<Vec<T>> {
        self.with(move |conn| {
            let mut statement = conn.prepare(&sql).map_err(unavailable)?;
            let rows = statement.query_map(params_from_iter(keys), |row| row.get::<_, String>(0)).map_err(unavailable)?;
            rows.map(|row| from_json(&row.map_err(unavailable)?)).collect()
        })
        .await
    }

    /// Removes the one row `sql` deletes with `keys`; `NotFound` if there was none.
    async fn delete_one(&self, sql: &'static str, keys: Vec<String>) -> StoreResult<()> {
        match self.execute(sql, keys.into_iter().map(Sql::Text).collect()).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }
}

/// An owned SQL value.
fn sql(value: impl Into<Sql>) -> Sql {
    value.into()
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, new: NewJob) -> StoreResult<Created> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            let job = &new.record.job;
            let now = Timestamp::now().0.timestamp();
            if let Some(idem) = &new.idempotency {
                match replayed(&tx, &job.org_id, idem, now)? {
                    Some(Some(job_id)) => return Ok(Created::Replayed(job_id)),
                    Some(None) => return Err(StoreError::IdempotencyMismatch),
                    None => {}
                }
            }
            let server = new.record.lock_key();
            let holder: Option<(String, String)> = tx
                .query_row(
                    "SELECT job_id, org FROM server_locks WHERE server = ?1 AND lease_until >= ?2",
                    params![server, now],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            if let Some((job_id, org)) = holder {
                return Err(StoreError::Locked { job_id, org });
            }
            tx.execute(
                "INSERT INTO jobs (org, id, sort, phase, db_arn, db_engine, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.org_id,
                    job.id,
                    job_sort_key(job),
                    job.phase().as_str(),
                    job.db_arn(),
                    job.db_engine(),
                    to_json(&new.record)
                ],
            )
            .map_err(unavailable)?;
            tx.execute(
                "INSERT OR REPLACE INTO server_locks (server, org, job_id, lease_until) VALUES (?1, ?2, ?3, ?4)",
                params![server, job.org_id, job.id, new.lease_until.0.timestamp()],
            )
            .map_err(unavailable)?;
            if let Some(idem) = &new.idempotency {
                tx.execute(
                    "INSERT OR REPLACE INTO idempotency (org, key, job_id, body_hash, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![job.org_id, idem.key, job.id, idem.body_hash, idem.expires_at.0.timestamp()],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(Created::New)
        })
        .await
    }

    async fn get_job(&self, org: &str, id: &str) -> StoreResult<Option<JobRecord>> {
        self.record("SELECT record FROM jobs WHERE org = ?1 AND id = ?2", vec![org.into(), id.into()]).await
    }

    async fn update_job(&self, record: &JobRecord) -> StoreResult<bool> {
        let job = &record.job;
        let values = vec![
            sql(job.org_id.clone()),
            sql(job.id.clone()),
            sql(to_json(record)),
            sql(job.phase().as_str().to_string()),
            sql(job.db_arn().to_string()),
            sql(job.db_engine().to_string()),
        ];
        let sql = "UPDATE jobs SET record = ?3, phase = ?4, db_arn = ?5, db_engine = ?6 WHERE org = ?1 AND id = ?2 AND phase = 'running'";
        Ok(self.execute(sql, values).await? == 1)
    }

    async fn finish_job(&self, record: &JobRecord, expires_at: Timestamp) -> StoreResult<bool> {
        let record = record.clone();
        self.with(move |conn| finish(conn, &record, expires_at)).await
    }

    async fn release_lock(&self, server: &str, job_id: &str) -> StoreResult<()> {
        let (server, job_id) = (server.to_string(), job_id.to_string());
        self.with(move |conn| release(conn, &server, &job_id)).await
    }

    async fn finish_and_release(&self, record: &JobRecord, expires_at: Timestamp) -> StoreResult<bool> {
        let record = record.clone();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            let finished = finish(&tx, &record, expires_at)?;
            release(&tx, record.lock_key(), record.id())?;
            tx.commit().map_err(unavailable)?;
            Ok(finished)
        })
        .await
    }

    async fn save_finished(&self, record: &JobRecord) -> StoreResult<bool> {
        let values = vec![sql(record.job.org_id.clone()), sql(record.job.id.clone()), sql(to_json(record))];
        Ok(self.execute("UPDATE jobs SET record = ?3 WHERE org = ?1 AND id = ?2 AND phase <> 'running'", values).await? == 1)
    }

    async fn delete_job(&self, org: &str, id: &str) -> StoreResult<()> {
        let (org, id) = (org.to_string(), id.to_string());
        self.with(move |conn| {
            let phase: Option<String> = conn
                .query_row("SELECT phase FROM jobs WHERE org = ?1 AND id = ?2", params![org, id], |row| row.get(0))
                .optional()
                .map_err(unavailable)?;
            match phase.as_deref() {
                None => Err(StoreError::NotFound),
                Some("running") => Err(StoreError::Running),
                Some(_) => {
                    conn.execute("DELETE FROM jobs WHERE org = ?1 AND id = ?2 AND phase <> 'running'", params![org, id])
                        .map_err(unavailable)?;
                    Ok(())
                }
            }
        })
        .await
    }

    async fn list_jobs(&self, org: &str, query: &JobQuery) -> StoreResult<Page<Job>> {
        let org = org.to_string();
        let query = query.clone();
        self.with(move |conn| {
            let (low, mut high) = sort_bounds(&query);
            if let Some(token) = &query.next_token {
                high = high.min(decode_token(&org, token)?);
            }
            let mut statement = conn
                .prepare(
                    "SELECT record, sort FROM jobs WHERE org = ?1 AND sort >= ?2 AND sort < ?3 \
                     AND (?4 IS NULL OR phase = ?4) AND (?5 IS NULL OR db_arn = ?5) AND (?6 IS NULL OR db_engine = ?6) \
                     AND (?9 IS NULL OR json_extract(record, '$.job.fleet_job_id') = ?9) \
                     ORDER BY sort DESC LIMIT ?7 OFFSET ?8",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(
                    params![
                        org,
                        low,
                        high,
                        query.phase.map(Phase::as_str),
                        query.db_arn,
                        query.db_engine,
                        (query.limit + 1) as i64,
                        query.skip as i64,
                        query.fleet_job_id
                    ],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let more = rows.len() > query.limit;
            let mut items = Vec::new();
            let mut last = String::new();
            for (record, sort) in rows.into_iter().take(query.limit) {
                items.push(from_json::<JobRecord>(&record)?.job);
                last = sort;
            }
            let next_token = more.then(|| encode_token(&org, &last));
            Ok(Page { items, next_token })
        })
        .await
    }

    async fn count_jobs(&self, org: &str, query: &JobQuery) -> StoreResult<u64> {
        let org = org.to_string();
        let query = query.clone();
        self.with(move |conn| {
            let (low, high) = sort_bounds(&query);
            let count: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM jobs WHERE org = ?1 AND sort >= ?2 AND sort < ?3 \
                     AND (?4 IS NULL OR phase = ?4) AND (?5 IS NULL OR db_arn = ?5) AND (?6 IS NULL OR db_engine = ?6) \
                     AND (?7 IS NULL OR json_extract(record, '$.job.fleet_job_id') = ?7)",
                    params![org, low, high, query.phase.map(Phase::as_str), query.db_arn, query.db_engine, query.fleet_job_id],
                    |row| row.get(0),
                )
                .map_err(unavailable)?;
            Ok(count as u64)
        })
        .await
    }

    async fn job_stats(&self, org: &str) -> StoreResult<JobStats> {
        let org = org.to_string();
        self.with(move |conn| {
            let mut statement = conn
                .prepare("SELECT phase, db_engine, COUNT(*) FROM jobs WHERE org = ?1 GROUP BY phase, db_engine")
                .map_err(unavailable)?;
            let mut stats = JobStats::default();
            let rows = statement
                .query_map(params![org], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?)))
                .map_err(unavailable)?;
            for row in rows {
                let (phase, engine, count) = row.map_err(unavailable)?;
                for _ in 0..count {
                    stats.count(&phase, &engine);
                }
            }
            Ok(stats.with_all_phases())
        })
        .await
    }

    async fn mark_provisioned(&self, provisioned: &Provisioned) -> StoreResult<()> {
        let values = vec![sql(provisioned.org.clone()), sql(provisioned.db_arn.clone()), sql(to_json(provisioned))];
        self.execute("INSERT OR REPLACE INTO provisioned (org, db_arn, record) VALUES (?1, ?2, ?3)", values).await.map(|_| ())
    }

    async fn provisioned(&self) -> StoreResult<Vec<Provisioned>> {
        self.records("SELECT record FROM provisioned ORDER BY org, db_arn".into(), Vec::new()).await
    }

    async fn forget_provisioned(&self, org: &str, db_arn: &str) -> StoreResult<()> {
        let keys = vec![sql(org.to_string()), sql(db_arn.to_string())];
        self.execute("DELETE FROM provisioned WHERE org = ?1 AND db_arn = ?2", keys).await.map(|_| ())
    }

    async fn get_provisioned(&self, org: &str, db_arn: &str) -> StoreResult<Option<Provisioned>> {
        self.record("SELECT record FROM provisioned WHERE org = ?1 AND db_arn = ?2", vec![org.into(), db_arn.into()]).await
    }

    async fn locks(&self) -> StoreResult<Vec<ServerLock>> {
        self.with(move |conn| {
            let mut statement =
                conn.prepare("SELECT server, org, job_id, lease_until FROM server_locks ORDER BY server").map_err(unavailable)?;
            let rows = statement
                .query_map([], |row| {
                    Ok(ServerLock {
                        server: row.get(0)?,
                        org: row.get(1)?,
                        job_id: row.get(2)?,
                        lease_until: Timestamp::from_epoch(row.get(3)?),
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }
}

/// A fleet job row's record, with its not-started notes.
/// Writes a finished job if it is still running: whether it was.
fn finish(conn: &Connection, record: &JobRecord, expires_at: Timestamp) -> StoreResult<bool> {
    let job = &record.job;
    let changed = conn
        .execute(
            "UPDATE jobs SET record = ?3, phase = ?4, db_arn = ?5, db_engine = ?6, expires_at = ?7 \
             WHERE org = ?1 AND id = ?2 AND phase = 'running'",
            params![
                job.org_id,
                job.id,
                to_json(record),
                job.phase().as_str(),
                job.db_arn(),
                job.db_engine(),
                expires_at.0.timestamp()
            ],
        )
        .map_err(unavailable)?;
    Ok(changed == 1)
}

/// An earlier request's job under the same idempotency key: `Some(Some(id))` for
/// the same body, `Some(None)` for another body, `None` if there was none.
fn replayed(conn: &Connection, org: &str, idem: &Idempotency, now: i64) -> StoreResult<Option<Option<String>>> {
    let existing: Option<(String, String)> = conn
        .query_row(
            "SELECT job_id, body_hash FROM idempotency WHERE org = ?1 AND key = ?2 AND expires_at > ?3",
            params![org, idem.key, now],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    Ok(existing.map(|(job_id, hash)| (hash == idem.body_hash).then_some(job_id)))
}

/// A page of at most `limit` items from `rows` (each its sort key, and what
/// `item` makes the item of), read one past the limit: the token names the last
/// key if there are more.
fn page<R, T>(
    org: &str,
    rows: impl ExactSizeIterator<Item = (String, R)>,
    limit: usize,
    mut item: impl FnMut(R) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let more = rows.len() > limit;
    let mut items = Vec::new();
    let mut last = String::new();
    for (key, row) in rows.take(limit) {
        items.push(item(row)?);
        last = key;
    }
    Ok(Page { items, next_token: more.then(|| encode_token(org, &last)) })
}

/// Releases the server's lock if `job_id` holds it.
fn release(conn: &Connection, server: &str, job_id: &str) -> StoreResult<()> {
    conn.execute("DELETE FROM server_locks WHERE server = ?1 AND job_id = ?2", params![server, job_id]).map_err(unavailable)?;
    Ok(())
}

fn fleet_with_notes(conn: &Connection, org: &str, id: &str, record: &str) -> StoreResult<FleetRecord> {
    let mut record: FleetRecord = from_json(record)?;
    let mut statement = conn
        .prepare("SELECT record FROM fleet_not_started WHERE org = ?1 AND fleet_id = ?2 ORDER BY instance_arn")
        .map_err(unavailable)?;
    let notes = statement.query_map(params![org, id], |row| row.get::<_, String>(0)).map_err(unavailable)?;
    for note in notes {
        record.fleet.status.not_started.push(from_json(&note.map_err(unavailable)?)?);
    }
    Ok(record)
}

#[async_trait]
impl FleetStore for SqliteStore {
    async fn create_fleet(&self, record: &FleetRecord) -> StoreResult<()> {
        let record = record.clone();
        self.with(move |conn| {
            let fleet = &record.fleet;
            conn.execute(
                "INSERT INTO fleets (org, id, sort, phase, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![fleet.org_id, fleet.id, fleet_sort_key(&record), fleet.status.phase.as_str(), fleet_json(&record)],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn get_fleet(&self, org: &str, id: &str) -> StoreResult<Option<FleetRecord>> {
        let (org, id) = (org.to_string(), id.to_string());
        self.with(move |conn| {
            let record: Option<String> = conn
                .query_row("SELECT record FROM fleets WHERE org = ?1 AND id = ?2", params![org, id], |row| row.get(0))
                .optional()
                .map_err(unavailable)?;
            record.map(|record| fleet_with_notes(conn, &org, &id, &record)).transpose()
        })
        .await
    }

    async fn update_fleet(&self, record: &FleetRecord) -> StoreResult<bool> {
        let record = record.clone();
        self.with(move |conn| {
            let fleet = &record.fleet;
            let changed = conn
                .execute(
                    "UPDATE fleets SET record = ?3, phase = ?4 WHERE org = ?1 AND id = ?2 AND phase = 'running'",
                    params![fleet.org_id, fleet.id, fleet_json(&record), fleet.status.phase.as_str()],
                )
                .map_err(unavailable)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn finish_fleet(&self, record: &FleetRecord, expires_at: Timestamp) -> StoreResult<bool> {
        let record = record.clone();
        self.with(move |conn| {
            let fleet = &record.fleet;
            let changed = conn
                .execute(
                    "UPDATE fleets SET record = ?3, phase = ?4, expires_at = ?5 WHERE org = ?1 AND id = ?2 AND phase = 'running'",
                    params![fleet.org_id, fleet.id, fleet_json(&record), fleet.status.phase.as_str(), expires_at.0.timestamp()],
                )
                .map_err(unavailable)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn note_not_started(&self, org: &str, id: &str, note: &NotStarted) -> StoreResult<()> {
        let values = vec![sql(org.to_string()), sql(id.to_string()), sql(note.instance_arn.clone()), sql(to_json(note))];
        let sql = "INSERT OR REPLACE INTO fleet_not_started (org, fleet_id, instance_arn, record) VALUES (?1, ?2, ?3, ?4)";
        self.execute(sql, values).await.map(|_| ())
    }

    async fn delete_fleet(&self, org: &str, id: &str) -> StoreResult<()> {
        let (org, id) = (org.to_string(), id.to_string());
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            let phase: Option<String> = tx
                .query_row("SELECT phase FROM fleets WHERE org = ?1 AND id = ?2", params![org, id], |row| row.get(0))
                .optional()
                .map_err(unavailable)?;
            match phase.as_deref() {
                None => return Err(StoreError::NotFound),
                Some("running") => return Err(StoreError::Running),
                Some(_) => {}
            }
            tx.execute("DELETE FROM fleets WHERE org = ?1 AND id = ?2", params![org, id]).map_err(unavailable)?;
            tx.execute("DELETE FROM fleet_not_started WHERE org = ?1 AND fleet_id = ?2", params![org, id])
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn list_fleets(&self, org: &str, limit: usize, next_token: Option<&str>) -> StoreResult<Page<FleetRecord>> {
        let org = org.to_string();
        let high = next_token.map(|token| decode_token(&org, token)).transpose()?.unwrap_or_else(|| "~".into());
        self.with(move |conn| {
            let mut statement = conn
                .prepare("SELECT id, record, sort FROM fleets WHERE org = ?1 AND sort < ?2 ORDER BY sort DESC LIMIT ?3")
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![org, high, (limit + 1) as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let rows = rows.into_iter().map(|(id, record, sort)| (sort, (id, record)));
            page(&org, rows, limit, |(id, record)| fleet_with_notes(conn, &org, &id, &record))
        })
        .await
    }

    async fn running_fleets(&self) -> StoreResult<Vec<FleetRecord>> {
        self.with(move |conn| {
            let mut statement =
                conn.prepare("SELECT org, id, record FROM fleets WHERE phase = 'running'").map_err(unavailable)?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter().map(|(org, id, record)| fleet_with_notes(conn, &org, &id, &record)).collect()
        })
        .await
    }
}

#[async_trait]
impl ResourceStore for SqliteStore {
    async fn create_resource(&self, resource: &Resource) -> StoreResult<()> {
        let resource = resource.clone();
        self.with(move |conn| {
            let inserted = conn
                .execute(
                    "INSERT OR IGNORE INTO resources (org, name, record) VALUES (?1, ?2, ?3)",
                    params![resource.org_id, resource.name, to_json(&resource)],
                )
                .map_err(unavailable)?;
            if inserted == 1 {
                Ok(())
            } else {
                Err(StoreError::Conflict(format!("a resource named '{}'", resource.name)))
            }
        })
        .await
    }

    async fn put_resource(&self, resource: &Resource) -> StoreResult<()> {
        let values = vec![sql(resource.org_id.clone()), sql(resource.name.clone()), sql(to_json(resource))];
        self.execute("INSERT OR REPLACE INTO resources (org, name, record) VALUES (?1, ?2, ?3)", values).await.map(|_| ())
    }

    async fn get_resource(&self, org: &str, name: &str) -> StoreResult<Option<Resource>> {
        self.record("SELECT record FROM resources WHERE org = ?1 AND name = ?2", vec![org.into(), name.into()]).await
    }

    async fn delete_resource(&self, org: &str, name: &str) -> StoreResult<()> {
        self.delete_one("DELETE FROM resources WHERE org = ?1 AND name = ?2", vec![org.into(), name.into()]).await
    }

    async fn list_resources(&self, org: &str, limit: usize, next_token: Option<&str>) -> StoreResult<Page<Resource>> {
        let org = org.to_string();
        let after = next_token.map(|token| decode_token(&org, token)).transpose()?.unwrap_or_default();
        self.with(move |conn| {
            let mut statement = conn
                .prepare("SELECT record, name FROM resources WHERE org = ?1 AND name > ?2 ORDER BY name LIMIT ?3")
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![org, after, (limit + 1) as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let rows = rows.into_iter().map(|(record, name)| (name, record));
            page(&org, rows, limit, |record| from_json(&record))
        })
        .await
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn put_account(&self, account: &Account) -> StoreResult<()> {
        let values = vec![sql(account.org_id.clone()), sql(account.account_id.clone()), sql(to_json(account))];
        self.execute("INSERT OR REPLACE INTO accounts (org, account, record) VALUES (?1, ?2, ?3)", values).await.map(|_| ())
    }

    async fn get_account(&self, org: &str, account_id: &str) -> StoreResult<Option<Account>> {
        self.record("SELECT record FROM accounts WHERE org = ?1 AND account = ?2", vec![org.into(), account_id.into()]).await
    }

    async fn list_accounts(&self, org: &str) -> StoreResult<Vec<Account>> {
        self.accounts_where("org", org).await
    }

    async fn registrations(&self, account_id: &str) -> StoreResult<Vec<Account>> {
        self.accounts_where("account", account_id).await
    }

    async fn delete_account(&self, org: &str, account_id: &str) -> StoreResult<()> {
        self.delete_one("DELETE FROM accounts WHERE org = ?1 AND account = ?2", vec![org.into(), account_id.into()]).await
    }

    async fn claim_server(&self, owner: &ServerOwner) -> StoreResult<ServerOwner> {
        let owner = owner.clone();
        self.with(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO server_owners (resource_id, record) VALUES (?1, ?2)",
                params![owner.resource_id, to_json(&owner)],
            )
            .map_err(unavailable)?;
            let record: String = conn
                .query_row("SELECT record FROM server_owners WHERE resource_id = ?1", params![owner.resource_id], |row| {
                    row.get(0)
                })
                .map_err(unavailable)?;
            from_json(&record)
        })
        .await
    }

    async fn server_owner(&self, resource_id: &str) -> StoreResult<Option<ServerOwner>> {
        self.record("SELECT record FROM server_owners WHERE resource_id = ?1", vec![resource_id.into()]).await
    }
}

impl SqliteStore {
    /// The accounts whose `column` (`org` or `account`) is `value`, by account then organisation.
    async fn accounts_where(&self, column: &'static str, value: &str) -> StoreResult<Vec<Account>> {
        self.records(format!("SELECT record FROM accounts WHERE {column} = ?1 ORDER BY account, org"), vec![value.into()]).await
    }
}

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn put_credential(&self, id: &str, value: &str) -> StoreResult<()> {
        let values = vec![sql(id.to_string()), sql(value.to_string())];
        self.execute("INSERT OR REPLACE INTO credentials (id, value) VALUES (?1, ?2)", values).await.map(|_| ())
    }

    async fn get_credential(&self, id: &str) -> StoreResult<Option<String>> {
        self.text("SELECT value FROM credentials WHERE id = ?1", vec![id.into()]).await
    }

    async fn delete_credential(&self, id: &str) -> StoreResult<()> {
        self.execute("DELETE FROM credentials WHERE id = ?1", vec![sql(id.to_string())]).await.map(|_| ())
    }
}

/// The store's directory 0700, and the database with its WAL files 0600 (SQLite
/// gives the WAL files the database's mode), before anything is written.
#[cfg(unix)]
fn private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        crate::auth::private_dir(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn private(path: &Path) -> std::io::Result<()> {
    path.parent().map_or(Ok(()), std::fs::create_dir_all)
}
