//! The DynamoDB adapter: one table.
//!
//! | item | `PK` | `SK` | other attributes |
//! | --- | --- | --- | --- |
//! | job | `ORG#<org>` | `JOB#<id>` | `GSI1PK` = `ORG#<org>#JOBS`, `GSI1SK` = `<created ms, 13 digits>#<id>`, `phase`, `db_arn`, `db_engine`, `fleet_job_id` (a fleet job's), `record` (JSON), `expires_at` once finished |
//! | database server lock | `LOCK#<server arn>` | `LOCK` | `job_id`, `org`, `lease_until` (epoch seconds), `GSI1PK` = `LOCKS`, `GSI1SK` = `<server arn>` |
//! | idempotency key | `ORG#<org>` | `IDEM#<key>` | `job_id`, `body_hash`, `expires_at` (24 h) |
//! | resource | `ORG#<org>` | `RES#<name>` | `record` (JSON) |
//! | registered account | `ACCOUNT#<account id>` | `ORG#<org>` | `GSI1PK` = `ORG#<org>#ACCOUNTS`, `GSI1SK` = `<account id>`, `record` (JSON) |
//! | credential (`database` provider) | `CRED#<org>/<id>` | `CRED` | `value` |
//! | provisioned instance | `PROVISIONED` | `<org>#<db arn>` | `record` (JSON) |
//! | database server's owner | `OWNER#<resource id>` | `OWNER` | `org`, `record` (JSON): written once, if absent |
//! | fleet job | `ORG#<org>` | `FLEET#<id>` | `GSI1PK` = `ORG#<org>#FLEETS`, `GSI1SK` = `<created ms>#<id>`, `phase`, `record` (JSON), `not_started` (a list, appended to), `expires_at` once finished |
//!
//! - `GSI1` (`GSI1PK`, `GSI1SK`, all attributes) lists an organisation's jobs
//!   newest first; `created_after`/`created_before` bound `GSI1SK`, the other
//!   filters are filter expressions. Listing and stats are Queries, never Scans.
//! - Creating a job is one `TransactWriteItems`: the job, the lock and the
//!   idempotency key, each `attribute_not_exists` (the lock: or its lease run
//!   out), so two creates for one server cannot both win, whatever their
//!   organisations. The lock is keyed by the server alone: an Aurora cluster and
//!   its instances share one. Finishing a job writes the job only while it is
//!   `running`; the lock is released (only by its holder) once the execution has
//!   ended, which a cancel does not wait for.
//! - The `CRED#` items hold passwords: the API function's IAM policy keeps it off
//!   them (`dynamodb:LeadingKeys`).
//! - `expires_at` (epoch seconds) is the table's TTL attribute: finished jobs
//!   expire after the configured retention, idempotency keys after 24 hours.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use super::*;

pub const GSI1: &str = "GSI1";

/// The `GSI1PK` of every database server lock.
const LOCKS: &str = "LOCKS";

/// The `GSI1PK` of every fleet job's running mark.
const RUNNING_FLEETS: &str = "RUNNING_FLEETS";

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn failed<E: std::fmt::Debug>(error: E) -> StoreError {
    StoreError::Unavailable(format!("DynamoDB: {error:?}"))
}

fn sdk_failed<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(format!("DynamoDB: {}", aws_sdk_dynamodb::error::DisplayErrorContext(&error)))
}

/// A conditional write's outcome: `true` if it applied, `false` if its condition failed.
fn applied<O, E, R>(result: Result<O, SdkError<E, R>>) -> StoreResult<bool>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(error) if error.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(error) => Err(sdk_failed(error)),
    }
}

fn org_pk(org: &str) -> String {
    format!("ORG#{org}")
}

fn jobs_pk(org: &str) -> String {
    format!("ORG#{org}#JOBS")
}

/// The key of a database server's lock: one per server, whichever organisation holds it.
fn lock_key(server: &str) -> Item {
    HashMap::from([("PK".into(), s(format!("LOCK#{server}"))), ("SK".into(), s("LOCK"))])
}

fn account_key(org: &str, account_id: &str) -> Item {
    HashMap::from([("PK".into(), s(format!("ACCOUNT#{account_id}"))), ("SK".into(), s(org_pk(org)))])
}

impl DynamoStore {
    /// Writes a job's item over the stored one if that is still running: whether it was.
    async fn put_over_running_job(&self, item: Item) -> StoreResult<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("#phase = :running")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_values(":running", s("running"))
            .send()
            .await;
        applied(result)
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table as `template.yaml` declares it (for tests and local runs against an emulator).
    pub async fn create_table(&self) -> StoreResult<()> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
            ScalarAttributeType,
        };
        let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(failed);
        let attr = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().map_err(failed)
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("PK", KeyType::Hash)?)
            .key_schema(key("SK", KeyType::Range)?)
            .attribute_definitions(attr("PK")?)
            .attribute_definitions(attr("SK")?)
            .attribute_definitions(attr("GSI1PK")?)
            .attribute_definitions(attr("GSI1SK")?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(GSI1)
                    .key_schema(key("GSI1PK", KeyType::Hash)?)
                    .key_schema(key("GSI1SK", KeyType::Range)?)
                    .projection(Projection::builder().projection_type(ProjectionType::All).build())
                    .build()
                    .map_err(failed)?,
            )
            .send()
            .await
            .map_err(sdk_failed)?;
        Ok(())
    }

    fn job_item(record: &JobRecord) -> Item {
        let job = &record.job;
        let fleet = job.fleet_job_id.as_ref().map(|fleet| ("fleet_job_id".to_string(), s(fleet)));
        let mut item = HashMap::from([
            ("PK".into(), s(org_pk(&job.org_id))),
            ("SK".into(), s(format!("JOB#{}", job.id))),
            ("GSI1PK".into(), s(jobs_pk(&job.org_id))),
            ("GSI1SK".into(), s(job_sort_key(job))),
            ("phase".into(), s(job.phase().as_str())),
            ("db_arn".into(), s(job.db_arn())),
            ("db_engine".into(), s(job.db_engine())),
            ("record".into(), s(to_json(record))),
        ]);
        item.extend(fleet);
        item
    }

    fn key(pk: String, sk: String) -> Item {
        HashMap::from([("PK".into(), s(pk)), ("SK".into(), s(sk))])
    }

    async fn get_item(&self, pk: String, sk: String) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_failed)?;
        Ok(out.item)
    }

    /// The live idempotency item for a key, if any.
    async fn idempotency(&self, org: &str, key: &str) -> StoreResult<Option<(String, String)>> {
        let now = Timestamp::now().0.timestamp();
        let item = self.get_item(org_pk(org), format!("IDEM#{key}")).await?;
        Ok(item.filter(|item| get_n(item, "expires_at").unwrap_or(0) > now).map(|item| {
            (get_s(&item, "job_id").unwrap_or_default().to_string(), get_s(&item, "body_hash").unwrap_or_default().to_string())
        }))
    }

    fn replay(existing: Option<(String, String)>, idem: &Idempotency) -> StoreResult<Option<Created>> {
        match existing {
            Some((job_id, hash)) if hash == idem.body_hash => Ok(Some(Created::Replayed(job_id))),
            Some(_) => Err(StoreError::IdempotencyMismatch),
            None => Ok(None),
        }
    }

    async fn query_all(
        &self,
        mut start: Option<Item>,
        mut build: impl FnMut(QueryFluentBuilder) -> QueryFluentBuilder,
        mut keep: impl FnMut(Item) -> StoreResult<bool>,
    ) -> StoreResult<Option<Item>> {
        loop {
            let query = self.client.query().table_name(&self.table).set_exclusive_start_key(start.take());
            let out = build(query).send().await.map_err(sdk_failed)?;
            for item in out.items.unwrap_or_default() {
                if !keep(item)? {
                    return Ok(None);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(None),
            }
        }
    }
}

impl DynamoStore {
    /// A `DeleteItem` of the item `key` names.
    fn delete(&self, key: Item) -> aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder {
        self.client.delete_item().table_name(&self.table).set_key(Some(key))
    }

    /// The job, its instance's lock, and the idempotency key if any: written together or not at all.
    fn create_items(&self, new: &NewJob) -> StoreResult<Vec<TransactWriteItem>> {
        let job = &new.record.job;
        let put = |item: Item, condition: &str| {
            Put::builder().table_name(&self.table).set_item(Some(item)).condition_expression(condition).build().map_err(failed)
        };
        let mut lock = lock_key(new.record.lock_key());
        lock.extend([
            ("job_id".into(), s(&job.id)),
            ("org".into(), s(&job.org_id)),
            ("lease_until".into(), n(new.lease_until.0.timestamp())),
            // Listed together for the sweeper.
            ("GSI1PK".into(), s(LOCKS)),
            ("GSI1SK".into(), s(new.record.lock_key())),
        ]);
        let lock = Put::builder()
            .table_name(&self.table)
            .set_item(Some(lock))
            .condition_expression("attribute_not_exists(PK) OR lease_until < :now")
            .expression_attribute_values(":now", n(Timestamp::now().0.timestamp()))
            .build()
            .map_err(failed)?;
        let mut items = vec![
            TransactWriteItem::builder().put(put(Self::job_item(&new.record), "attribute_not_exists(PK)")?).build(),
            TransactWriteItem::builder().put(lock).build(),
        ];
        if let Some(idem) = &new.idempotency {
            let item = HashMap::from([
                ("PK".into(), s(org_pk(&job.org_id))),
                ("SK".into(), s(format!("IDEM#{}", idem.key))),
                ("job_id".into(), s(&job.id)),
                ("body_hash".into(), s(&idem.body_hash)),
                ("expires_at".into(), n(idem.expires_at.0.timestamp())),
            ]);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK) OR expires_at < :now")
                .expression_attribute_values(":now", n(Timestamp::now().0.timestamp()))
                .build()
                .map_err(failed)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(items)
    }

    /// A finished job's item: the job, and when it expires.
    fn finished_item(record: &JobRecord, expires_at: Timestamp) -> Item {
        let mut item = Self::job_item(record);
        item.insert("expires_at".into(), n(expires_at.0.timestamp()));
        item
    }

    /// Why the creation was refused: a racing request with the same key (answered
    /// as it would have been), the instance's lock, or the table.
    async fn create_refused(
        &self,
        new: &NewJob,
        error: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> StoreResult<Created> {
        let job = &new.record.job;
        let Some(reasons) = failed_conditions(&error) else { return Err(sdk_failed(error)) };
        if let Some(idem) = new.idempotency.as_ref().filter(|_| reasons.get(2) == Some(&true)) {
            if let Some(created) = Self::replay(self.idempotency(&job.org_id, &idem.key).await?, idem)? {
                return Ok(created);
            }
        }
        if reasons.get(1) == Some(&true) {
            let key = lock_key(new.record.lock_key());
            let holder = self.get_item(get_s(&key, "PK").unwrap_or_default().into(), "LOCK".into()).await?;
            let field = |name| holder.as_ref().and_then(|item| get_s(item, name)).unwrap_or("unknown").to_string();
            return Err(StoreError::Locked { job_id: field("job_id"), org: field("org") });
        }
        Err(sdk_failed(error))
    }

    /// Where a listing resumes: the item its `next_token` names.
    fn start_key(org: &str, token: Option<&str>) -> StoreResult<Option<Item>> {
        let Some(token) = token else { return Ok(None) };
        let sort = decode_token(org, token)?;
        let id = sort.split_once('#').map(|(_, id)| id).ok_or(StoreError::BadToken)?;
        Ok(Some(HashMap::from([
            ("PK".to_string(), s(org_pk(org))),
            ("SK".to_string(), s(format!("JOB#{id}"))),
            ("GSI1PK".to_string(), s(jobs_pk(org))),
            ("GSI1SK".to_string(), s(sort)),
        ])))
    }
}

/// Which items of a cancelled transaction failed their condition, in order;
/// `None` if the transaction failed otherwise.
fn failed_conditions(
    error: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<Vec<bool>> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            Some(cancelled.cancellation_reasons().iter().map(|reason| reason.code() == Some("ConditionalCheckFailed")).collect())
        }
        _ => None,
    }
}

/// A listing's filter expression, its attribute names and its values (the key's bounds included).
type Filters = (Option<String>, Option<HashMap<String, String>>, HashMap<String, AttributeValue>);

fn filters(org: &str, query: &JobQuery) -> Filters {
    let (low, high) = sort_bounds(query);
    let low = if low.is_empty() { "0".to_string() } else { low };
    let mut expressions = Vec::new();
    let mut values: HashMap<String, AttributeValue> =
        HashMap::from([(":pk".to_string(), s(jobs_pk(org))), (":low".to_string(), s(low)), (":high".to_string(), s(high))]);
    let mut names = HashMap::new();
    for (name, value) in [
        ("phase", query.phase.map(|p| p.as_str().to_string())),
        ("db_arn", query.db_arn.clone()),
        ("db_engine", query.db_engine.clone()),
        ("fleet_job_id", query.fleet_job_id.clone()),
    ] {
        if let Some(value) = value {
            expressions.push(format!("#{name} = :{name}"));
            names.insert(format!("#{name}"), name.to_string());
            values.insert(format!(":{name}"), s(value));
        }
    }
    ((!expressions.is_empty()).then(|| expressions.join(" AND ")), (!names.is_empty()).then_some(names), values)
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_job(&self, new: NewJob) -> StoreResult<Created> {
        let job = &new.record.job;
        if let Some(idem) = &new.idempotency {
            if let Some(created) = Self::replay(self.idempotency(&job.org_id, &idem.key).await?, idem)? {
                return Ok(created);
            }
        }
        let items = self.create_items(&new)?;
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(Created::New),
            Err(error) => self.create_refused(&new, error).await,
        }
    }

    async fn get_job(&self, org: &str, id: &str) -> StoreResult<Option<JobRecord>> {
        let item = self.get_item(org_pk(org), format!("JOB#{id}")).await?;
        item.as_ref().and_then(|item| get_s(item, "record")).map(from_json).transpose()
    }

    async fn update_job(&self, record: &JobRecord) -> StoreResult<bool> {
        self.put_over_running_job(Self::job_item(record)).await
    }

    async fn finish_job(&self, record: &JobRecord, expires_at: Timestamp) -> StoreResult<bool> {
        self.put_over_running_job(Self::finished_item(record, expires_at)).await
    }

    async fn release_lock(&self, server: &str, job_id: &str) -> StoreResult<()> {
        // Another job's lock (it took over an expired lease) is left alone.
        let result = self
            .delete(lock_key(server))
            .condition_expression("job_id = :job")
            .expression_attribute_values(":job", s(job_id))
            .send()
            .await;
        applied(result).map(|_| ())
    }

    async fn finish_and_release(&self, record: &JobRecord, expires_at: Timestamp) -> StoreResult<bool> {
        let job = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::finished_item(record, expires_at)))
            .condition_expression("#phase = :running")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_values(":running", s("running"))
            .build()
            .map_err(failed)?;
        // The job's own lock, or none (released already): another job's is left alone.
        let lock = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(lock_key(record.lock_key())))
            .condition_expression("attribute_not_exists(PK) OR job_id = :job")
            .expression_attribute_values(":job", s(record.id()))
            .build()
            .map_err(failed)?;
        let items = vec![TransactWriteItem::builder().put(job).build(), TransactWriteItem::builder().delete(lock).build()];
        let error = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(true),
            Err(error) => error,
        };
        let Some(refused) = failed_conditions(&error) else { return Err(sdk_failed(error)) };
        match (refused.first() == Some(&true), refused.get(1) == Some(&true)) {
            // Finished already (a cancel): the lock is released on its own.
            (true, _) => self.release_lock(record.lock_key(), record.id()).await.map(|()| false),
            // Another job holds the server (it took over an expired lease): the job finishes on its own.
            (false, true) => self.finish_job(record, expires_at).await,
            (false, false) => Err(sdk_failed(error)),
        }
    }

    async fn save_finished(&self, record: &JobRecord) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("PK", s(org_pk(record.org())))
            .key("SK", s(format!("JOB#{}", record.id())))
            .update_expression("SET #record = :record")
            .condition_expression("attribute_exists(PK) AND #phase <> :running")
            .expression_attribute_names("#record", "record")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_values(":record", s(to_json(record)))
            .expression_attribute_values(":running", s("running"))
            .send()
            .await;
        applied(result)
    }

    async fn delete_job(&self, org: &str, id: &str) -> StoreResult<()> {
        let result = self
            .delete(Self::key(org_pk(org), format!("JOB#{id}")))
            .condition_expression("attribute_exists(PK) AND #phase <> :running")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_values(":running", s("running"))
            .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match error.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => {
                    match self.get_item(org_pk(org), format!("JOB#{id}")).await? {
                        Some(_) => Err(StoreError::Running),
                        None => Err(StoreError::NotFound),
                    }
                }
                _ => Err(sdk_failed(error)),
            },
        }
    }

    async fn list_jobs(&self, org: &str, query: &JobQuery) -> StoreResult<Page<Job>> {
        let start = Self::start_key(org, query.next_token.as_deref())?;
        let (filter, names, values) = filters(org, query);
        let mut collected: Vec<(String, Job)> = Vec::new();
        let mut skip = query.skip;
        self.query_all(
            start,
            |builder| {
                builder
                    .index_name(GSI1)
                    .key_condition_expression("GSI1PK = :pk AND GSI1SK BETWEEN :low AND :high")
                    .set_filter_expression(filter.clone())
                    .set_expression_attribute_names(names.clone())
                    .set_expression_attribute_values(Some(values.clone()))
                    .scan_index_forward(false)
                    .limit(query.skip.saturating_add(query.limit).saturating_add(1).clamp(1, 1000) as i32)
            },
            |item| {
                if skip > 0 {
                    skip -= 1;
                    return Ok(true);
                }
                let sort = get_s(&item, "GSI1SK").unwrap_or_default().to_string();
                let record: JobRecord = from_json(get_s(&item, "record").unwrap_or_default())?;
                collected.push((sort, record.job));
                Ok(collected.len() <= query.limit)
            },
        )
        .await?;
        let more = collected.len() > query.limit;
        collected.truncate(query.limit);
        let next_token = more.then(|| encode_token(org, &collected.last().map(|(sort, _)| sort.clone()).unwrap_or_default()));
        Ok(Page { items: collected.into_iter().map(|(_, job)| job).collect(), next_token })
    }

    async fn count_jobs(&self, org: &str, query: &JobQuery) -> StoreResult<u64> {
        let (filter, names, values) = filters(org, query);
        let mut count = 0;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression("GSI1PK = :pk AND GSI1SK BETWEEN :low AND :high")
                .set_filter_expression(filter.clone())
                .set_expression_attribute_names(names.clone())
                .set_expression_attribute_values(Some(values.clone()))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_failed)?;
            count += out.count as u64;
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(count),
            }
        }
    }

    async fn job_stats(&self, org: &str) -> StoreResult<JobStats> {
        let mut stats = JobStats::default();
        self.query_all(
            None,
            |builder| {
                builder
                    .index_name(GSI1)
                    .key_condition_expression("GSI1PK = :pk")
                    .expression_attribute_values(":pk", s(jobs_pk(org)))
                    .projection_expression("#phase, db_engine")
                    .expression_attribute_names("#phase", "phase")
            },
            |item| {
                stats.count(get_s(&item, "phase").unwrap_or_default(), get_s(&item, "db_engine").unwrap_or_default());
                Ok(true)
            },
        )
        .await?;
        Ok(stats.with_all_phases())
    }

    async fn mark_provisioned(&self, provisioned: &Provisioned) -> StoreResult<()> {
        let item = HashMap::from([
            ("PK".into(), s("PROVISIONED")),
            ("SK".into(), s(format!("{}#{}", provisioned.org, provisioned.db_arn))),
            ("record".into(), s(to_json(provisioned))),
        ]);
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_failed)?;
        Ok(())
    }

    async fn provisioned(&self) -> StoreResult<Vec<Provisioned>> {
        let mut all = Vec::new();
        self.query_all(
            None,
            |query| query.key_condition_expression("PK = :pk").expression_attribute_values(":pk", s("PROVISIONED")),
            |item| {
                all.push(from_json(get_s(&item, "record").unwrap_or_default())?);
                Ok(true)
            },
        )
        .await?;
        Ok(all)
    }

    async fn forget_provisioned(&self, org: &str, db_arn: &str) -> StoreResult<()> {
        let key = Self::key("PROVISIONED".into(), format!("{org}#{db_arn}"));
        self.client.delete_item().table_name(&self.table).set_key(Some(key)).send().await.map_err(sdk_failed)?;
        Ok(())
    }

    async fn get_provisioned(&self, org: &str, db_arn: &str) -> StoreResult<Option<Provisioned>> {
        let item = self.get_item("PROVISIONED".into(), format!("{org}#{db_arn}")).await?;
        item.as_ref().and_then(|item| get_s(item, "record")).map(from_json).transpose()
    }

    async fn locks(&self) -> StoreResult<Vec<ServerLock>> {
        let mut locks = Vec::new();
        self.query_all(
            None,
            |query| query.index_name(GSI1).key_condition_expression("GSI1PK = :pk").expression_attribute_values(":pk", s(LOCKS)),
            |item| {
                locks.push(ServerLock {
                    server: get_s(&item, "GSI1SK").unwrap_or_default().to_string(),
                    org: get_s(&item, "org").unwrap_or_default().to_string(),
                    job_id: get_s(&item, "job_id").unwrap_or_default().to_string(),
                    lease_until: Timestamp::from_epoch(get_n(&item, "lease_until").unwrap_or_default()),
                });
                Ok(true)
            },
        )
        .await?;
        Ok(locks)
    }
}

#[async_trait]
impl ResourceStore for DynamoStore {
    async fn create_resource(&self, resource: &Resource) -> StoreResult<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(resource_item(resource)))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match applied(result)? {
            true => Ok(()),
            false => Err(StoreError::Conflict(format!("a resource named '{}'", resource.name))),
        }
    }

    async fn put_resource(&self, resource: &Resource) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(resource_item(resource)))
            .send()
            .await
            .map_err(sdk_failed)?;
        Ok(())
    }

    async fn get_resource(&self, org: &str, name: &str) -> StoreResult<Option<Resource>> {
        let item = self.get_item(org_pk(org), format!("RES#{name}")).await?;
        item.as_ref().and_then(|item| get_s(item, "record")).map(from_json).transpose()
    }

    async fn delete_resource(&self, org: &str, name: &str) -> StoreResult<()> {
        let result =
            self.delete(Self::key(org_pk(org), format!("RES#{name}"))).condition_expression("attribute_exists(PK)").send().await;
        match applied(result)? {
            true => Ok(()),
            false => Err(StoreError::NotFound),
        }
    }

    async fn list_resources(&self, org: &str, limit: usize, next_token: Option<&str>) -> StoreResult<Page<Resource>> {
        let start = next_token
            .map(|token| Ok::<_, StoreError>(Self::key(org_pk(org), format!("RES#{}", decode_token(org, token)?))))
            .transpose()?;
        let mut items: Vec<Resource> = Vec::new();
        self.query_all(
            start,
            |builder| {
                builder
                    .key_condition_expression("PK = :pk AND begins_with(SK, :res)")
                    .expression_attribute_values(":pk", s(org_pk(org)))
                    .expression_attribute_values(":res", s("RES#"))
                    .limit((limit + 1).min(1000) as i32)
            },
            |item| {
                items.push(from_json(get_s(&item, "record").unwrap_or_default())?);
                Ok(items.len() <= limit)
            },
        )
        .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_token = more.then(|| encode_token(org, &items.last().map(|r| r.name.clone()).unwrap_or_default()));
        Ok(Page { items, next_token })
    }
}

fn fleets_pk(org: &str) -> String {
    format!("ORG#{org}#FLEETS")
}

/// A fleet item's record, with its not-started notes (each once, though a retried step may have added it twice).
fn fleet_of(item: &Item) -> StoreResult<FleetRecord> {
    let mut record: FleetRecord = from_json(get_s(item, "record").unwrap_or_default())?;
    let notes = item.get("not_started").and_then(|v| v.as_l().ok()).map(Vec::as_slice).unwrap_or_default();
    for note in notes.iter().filter_map(|note| note.as_s().ok()) {
        let note: NotStarted = from_json(note)?;
        if !record.fleet.status.not_started.iter().any(|n| n.instance_arn == note.instance_arn) {
            record.fleet.status.not_started.push(note);
        }
    }
    Ok(record)
}

impl DynamoStore {
    /// `SET` the fleet job's record and phase (and expiry) while it runs; its notes are left alone.
    async fn write_running_fleet(&self, record: &FleetRecord, expires_at: Option<Timestamp>) -> StoreResult<bool> {
        let mut update = "SET #record = :record, #phase = :phase".to_string();
        let mut values = HashMap::from([
            (":record".to_string(), s(fleet_json(record))),
            (":phase".to_string(), s(record.fleet.status.phase.as_str())),
            (":running".to_string(), s("running")),
        ]);
        if let Some(at) = expires_at {
            update += ", expires_at = :expires";
            values.insert(":expires".into(), n(at.0.timestamp()));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("PK", s(org_pk(record.org())))
            .key("SK", s(format!("FLEET#{}", record.id())))
            .update_expression(update)
            .condition_expression("attribute_exists(PK) AND #phase = :running")
            .expression_attribute_names("#record", "record")
            .expression_attribute_names("#phase", "phase")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        applied(result)
    }
}

#[async_trait]
impl FleetStore for DynamoStore {
    /// The fleet job's running mark goes first, so the sweep finds every fleet job
    /// that may run; a mark whose fleet job was never stored, or has finished, the
    /// sweep removes.
    async fn create_fleet(&self, record: &FleetRecord) -> StoreResult<()> {
        let mut mark = running_mark(record.org(), record.id());
        mark.extend([
            ("GSI1PK".into(), s(RUNNING_FLEETS)),
            ("GSI1SK".into(), s(format!("{}#{}", record.org(), record.id()))),
            ("org".into(), s(record.org())),
            ("fleet_id".into(), s(record.id())),
        ]);
        self.client.put_item().table_name(&self.table).set_item(Some(mark)).send().await.map_err(sdk_failed)?;
        let item = HashMap::from([
            ("PK".into(), s(org_pk(record.org()))),
            ("SK".into(), s(format!("FLEET#{}", record.id()))),
            ("GSI1PK".into(), s(fleets_pk(record.org()))),
            ("GSI1SK".into(), s(fleet_sort_key(record))),
            ("phase".into(), s(record.fleet.status.phase.as_str())),
            ("record".into(), s(fleet_json(record))),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match applied(result)? {
            true => Ok(()),
            false => Err(StoreError::Conflict(format!("fleet job {}", record.id()))),
        }
    }

    async fn get_fleet(&self, org: &str, id: &str) -> StoreResult<Option<FleetRecord>> {
        let item = self.get_item(org_pk(org), format!("FLEET#{id}")).await?;
        item.as_ref().map(fleet_of).transpose()
    }

    async fn update_fleet(&self, record: &FleetRecord) -> StoreResult<bool> {
        self.write_running_fleet(record, None).await
    }

    async fn finish_fleet(&self, record: &FleetRecord, expires_at: Timestamp) -> StoreResult<bool> {
        self.write_running_fleet(record, Some(expires_at)).await
    }

    async fn note_not_started(&self, org: &str, id: &str, note: &NotStarted) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("PK", s(org_pk(org)))
            .key("SK", s(format!("FLEET#{id}")))
            .update_expression("SET not_started = list_append(if_not_exists(not_started, :none), :note)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":note", AttributeValue::L(vec![s(to_json(note))]))
            .send()
            .await;
        match applied(result)? {
            true => Ok(()),
            false => Err(StoreError::NotFound),
        }
    }

    async fn delete_fleet(&self, org: &str, id: &str) -> StoreResult<()> {
        let result = self
            .delete(Self::key(org_pk(org), format!("FLEET#{id}")))
            .condition_expression("attribute_exists(PK) AND #phase <> :running")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_values(":running", s("running"))
            .send()
            .await;
        match applied(result)? {
            true => Ok(()),
            false => match self.get_item(org_pk(org), format!("FLEET#{id}")).await? {
                Some(_) => Err(StoreError::Running),
                None => Err(StoreError::NotFound),
            },
        }
    }

    async fn list_fleets(&self, org: &str, limit: usize, next_token: Option<&str>) -> StoreResult<Page<FleetRecord>> {
        let start = match next_token {
            None => None,
            Some(token) => {
                let sort = decode_token(org, token)?;
                let id = sort.split_once('#').map(|(_, id)| id.to_string()).ok_or(StoreError::BadToken)?;
                Some(HashMap::from([
                    ("PK".to_string(), s(org_pk(org))),
                    ("SK".to_string(), s(format!("FLEET#{id}"))),
                    ("GSI1PK".to_string(), s(fleets_pk(org))),
                    ("GSI1SK".to_string(), s(sort)),
                ]))
            }
        };
        let mut collected: Vec<(String, FleetRecord)> = Vec::new();
        self.query_all(
            start,
            |builder| {
                builder
                    .index_name(GSI1)
                    .key_condition_expression("GSI1PK = :pk")
                    .expression_attribute_values(":pk", s(fleets_pk(org)))
                    .scan_index_forward(false)
                    .limit((limit + 1).min(1000) as i32)
            },
            |item| {
                collected.push((get_s(&item, "GSI1SK").unwrap_or_default().to_string(), fleet_of(&item)?));
                Ok(collected.len() <= limit)
            },
        )
        .await?;
        let more = collected.len() > limit;
        collected.truncate(limit);
        let next_token = more.then(|| encode_token(org, &collected.last().map(|(sort, _)| sort.clone()).unwrap_or_default()));
        Ok(Page { items: collected.into_iter().map(|(_, record)| record).collect(), next_token })
    }

    async fn running_fleets(&self) -> StoreResult<Vec<FleetRecord>> {
        let mut marked = Vec::new();
        let query = |builder: QueryFluentBuilder| {
            builder
                .index_name(GSI1)
                .key_condition_expression("GSI1PK = :pk")
                .expression_attribute_values(":pk", s(RUNNING_FLEETS))
        };
        self.query_all(None, query, |item| {
            marked.push((
                get_s(&item, "org").unwrap_or_default().to_string(),
                get_s(&item, "fleet_id").unwrap_or_default().to_string(),
            ));
            Ok(true)
        })
        .await?;
        let mut running = Vec::new();
        for (org, id) in marked {
            match self.get_fleet(&org, &id).await? {
                Some(record) if record.is_running() => running.push(record),
                _ => {
                    self.delete(running_mark(&org, &id)).send().await.map_err(sdk_failed)?;
                }
            }
        }
        Ok(running)
    }
}

/// The key of a fleet job's running mark.
fn running_mark(org: &str, id: &str) -> Item {
    DynamoStore::key(format!("FLEETRUN#{org}#{id}"), "FLEETRUN".into())
}

fn resource_item(resource: &Resource) -> Item {
    HashMap::from([
        ("PK".into(), s(org_pk(&resource.org_id))),
        ("SK".into(), s(format!("RES#{}", resource.name))),
        ("record".into(), s(to_json(resource))),
    ])
}

#[async_trait]
impl AccountStore for DynamoStore {
    async fn put_account(&self, account: &Account) -> StoreResult<()> {
        let mut item = account_key(&account.org_id, &account.account_id);
        item.extend([
            ("GSI1PK".into(), s(format!("ORG#{}#ACCOUNTS", account.org_id))),
            ("GSI1SK".into(), s(&account.account_id)),
            ("record".into(), s(to_json(account))),
        ]);
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_failed)?;
        Ok(())
    }

    async fn get_account(&self, org: &str, account_id: &str) -> StoreResult<Option<Account>> {
        let item = self.get_item(format!("ACCOUNT#{account_id}"), org_pk(org)).await?;
        item.as_ref().and_then(|item| get_s(item, "record")).map(from_json).transpose()
    }

    async fn list_accounts(&self, org: &str) -> StoreResult<Vec<Account>> {
        let mut accounts = Vec::new();
        self.query_all(
            None,
            |query| {
                query
                    .index_name(GSI1)
                    .key_condition_expression("GSI1PK = :pk")
                    .expression_attribute_values(":pk", s(format!("ORG#{org}#ACCOUNTS")))
            },
            |item| {
                accounts.push(from_json(get_s(&item, "record").unwrap_or_default())?);
                Ok(true)
            },
        )
        .await?;
        Ok(accounts)
    }

    async fn registrations(&self, account_id: &str) -> StoreResult<Vec<Account>> {
        let mut accounts = Vec::new();
        self.query_all(
            None,
            |query| {
                query
                    .key_condition_expression("PK = :pk")
                    .expression_attribute_values(":pk", s(format!("ACCOUNT#{account_id}")))
                    .consistent_read(true)
            },
            |item| {
                accounts.push(from_json(get_s(&item, "record").unwrap_or_default())?);
                Ok(true)
            },
        )
        .await?;
        Ok(accounts)
    }

    async fn delete_account(&self, org: &str, account_id: &str) -> StoreResult<()> {
        let result = self.delete(account_key(org, account_id)).condition_expression("attribute_exists(PK)").send().await;
        match applied(result)? {
            true => Ok(()),
            false => Err(StoreError::NotFound),
        }
    }

    async fn claim_server(&self, owner: &ServerOwner) -> StoreResult<ServerOwner> {
        let mut item = Self::key(format!("OWNER#{}", owner.resource_id), "OWNER".into());
        item.extend([("org".into(), s(&owner.org_id)), ("record".into(), s(to_json(owner)))]);
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        match applied(put.condition_expression("attribute_not_exists(PK)").send().await)? {
            true => Ok(owner.clone()),
            false => self
                .server_owner(&owner.resource_id)
                .await?
                .ok_or(StoreError::Unavailable("DynamoDB: a server's owner was claimed and is gone".into())),
        }
    }

    async fn server_owner(&self, resource_id: &str) -> StoreResult<Option<ServerOwner>> {
        let item = self.get_item(format!("OWNER#{resource_id}"), "OWNER".into()).await?;
        item.as_ref().and_then(|item| get_s(item, "record")).map(from_json).transpose()
    }
}

#[async_trait]
impl CredentialStore for DynamoStore {
    async fn put_credential(&self, id: &str, value: &str) -> StoreResult<()> {
        let mut item = Self::key(format!("CRED#{id}"), "CRED".into());
        item.insert("value".into(), s(value));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_failed)?;
        Ok(())
    }

    async fn get_credential(&self, id: &str) -> StoreResult<Option<String>> {
        let item = self.get_item(format!("CRED#{id}"), "CRED".into()).await?;
        Ok(item.as_ref().and_then(|item| get_s(item, "value")).map(str::to_string))
    }

    async fn delete_credential(&self, id: &str) -> StoreResult<()> {
        let key = Self::key(format!("CRED#{id}"), "CRED".into());
        self.client.delete_item().table_name(&self.table).set_key(Some(key)).send().await.map_err(sdk_failed)?;
        Ok(())
    }
}
