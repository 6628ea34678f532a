//! Provisioning one instance: its master credentials, new passwords staged in the
//! secret store, the roles given them, a login as each role and the password
//! promoted at once, then the grants.

use futures::future;
use futures::TryFutureExt;

use crate::config::Settings;
use crate::engine::{self, Family, Grants, Level, Report, RoleSpec, Survey, Target};
use crate::inventory::{Instance, Inventory, InventoryError};
use crate::model::job::{CredentialsInfo, Phase, RoleResult};
use crate::model::request::{Invalid, Mode, Rotation};
use crate::model::scope::{Scope, EVERYTHING};
use crate::model::Timestamp;
use crate::secrets::{RoleCredentials, SecretError, SecretRef, SecretStore, Staged};

/// Where the credentials say the database is: the instance's real endpoint,
/// even when dbroles itself connects through an override.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub db: String,
    pub engine: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProvisionError {
    /// Nothing changed in the database.
    #[error("storing the new credentials failed before any change to the database: {0}")]
    SecretStore(SecretError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("{}", engine::unsupported(.0))]
    UnsupportedEngine(String),
    #[error(transparent)]
    InvalidPrefix(Invalid),
}

pub struct Outcome {
    pub results: Vec<RoleResult>,
    pub report: Report,
}

impl Outcome {
    pub fn all_completed(&self) -> bool {
        self.results.iter().all(|result| result.status == Phase::Completed)
    }
}

/// What a run may do besides the defaults: take over roles dbroles did not
/// create, and how it changes passwords.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    pub adopt: bool,
    pub rotation: Rotation,
    pub mode: Mode,
    pub scope: &'a Scope,
    /// The job's bound on connections to the server (`aws.max_db_connections`); `None`: the deployment's.
    pub max_connections: Option<usize>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self { adopt: false, rotation: Rotation::Single, mode: Mode::Run, scope: &EVERYTHING, max_connections: None }
    }
}

impl Options<'_> {
    /// The single rotation over everything, taking roles over (`adopt`) or not.
    pub fn adopting(adopt: bool) -> Self {
        Self { adopt, ..Self::default() }
    }
}

/// What happened to one role, in the order it happens.
enum Step {
    /// Left as it was: an existing role dbroles does not manage, or one the master may not fix.
    Refused(String),
    /// Its new password was staged and is being set.
    Staged(Staged),
    /// No new password: a run cut short had rotated it, and this run promoted that (alternating).
    Kept,
    Failed(String),
    /// Its new password logs in and is the consumer-visible one.
    Promoted,
}

/// Provisions the three roles on one server, in an order that never strands a password:
///
/// 1. the survey: databases and existing roles, nothing changed;
/// 2. at the same time, a staged password newer than the current one (a run cut
///    short) is tried, and promoted if it logs in;
/// 3. existing roles dbroles did not create are refused, unless `adopt` says to take them over;
/// 4. the new passwords are staged (consumers still read the old ones), each on
///    the level's role, or under the alternating rotation on the login consumers
///    are not using;
/// 5. the roles are created or altered with the new passwords;
/// 6. each new password logs in, and is promoted at once (retried), the roles side by side;
/// 7. the grants: a failure is reported per database, and the credentials stay consistent.
pub async fn provision_roles(
    target: &Target,
    endpoint: &Endpoint,
    prefix: &str,
    secrets: &dyn SecretStore,
    secret_ref: &SecretRef,
    options: Options<'_>,
) -> Result<Outcome, ProvisionError> {
    let mut roles: Vec<RoleSpec> = specs(prefix, options).collect();
    let refs: Vec<SecretRef> = roles.iter().map(|role| SecretRef { user: role.user.clone(), ..secret_ref.clone() }).collect();
    let session = engine::Session::scoped(target, options.scope.engine());
    // The survey and what the store holds, at once: neither changes the database.
    let mut priors = Vec::new();
    for (role, secret) in roles.iter().zip(&refs) {
        priors.push(prior(&session, secrets, secret, role));
    }
    let (survey, stored) = futures::try_join!(session.survey(&roles).err_into(), future::try_join_all(priors))?;
    // The futures are collected first, so no closure is held across an await
    // (and the whole future stays `Send` for any lifetime).
    let staging: Vec<_> = roles
        .iter_mut()
        .zip(&refs)
        .zip(stored)
        .map(|((role, secret), prior)| prepare(&survey, secrets, secret, endpoint, role, prior, options.adopt))
        .collect();
    let (steps, active): (Vec<Step>, Vec<Option<String>>) = future::try_join_all(staging).await?.into_iter().unzip();
    let accepted: Vec<RoleSpec> = roles
        .iter()
        .zip(&steps)
        .filter(|(_, step)| matches!(step, Step::Staged(_) | Step::Kept))
        .map(|(role, _)| role.clone())
        .collect();
    let mut set = session.set_passwords(&accepted, &survey).await?.into_iter();
    let set: Vec<Option<Result<(), engine::DbError>>> = steps
        .iter()
        .map(|step| matches!(step, Step::Staged(_) | Step::Kept).then(|| set.next().expect("one result per accepted role")))
        .collect();
    // Each new password logs in and is promoted, the roles at once, before any grant.
    let settling: Vec<_> =
        roles.iter().zip(steps).zip(set).map(|((role, step), set)| settled(&session, secrets, role, step, set)).collect();
    let steps: Vec<Step> = future::join_all(settling).await;
    let granted = |step: &Step| matches!(step, Step::Promoted | Step::Kept);
    let ready: Vec<RoleSpec> = roles.iter().zip(&steps).filter(|(_, step)| granted(step)).map(|(role, _)| role.clone()).collect();
    let mut grants = session.grant(&ready, &survey).await.into_iter();
    let results = roles
        .iter()
        .zip(steps)
        .zip(refs.iter().zip(active))
        .map(|((role, step), (secret, active))| {
            let grants = granted(&step).then(|| grants.next().expect("one result per granted role"));
            let active = match (&step, &role.login) {
                (Step::Promoted, Some(login)) => Some(login.clone()),
                _ => active,
            };
            let active = role.alternate.as_ref().and(active);
            result(role, step, grants, survey.databases.len(), secrets.info(secret), active)
        })
        .collect();
    Ok(Outcome { results, report: session.report(&survey) })
}

/// Retires the three roles on one server, both logins of each level whatever
/// the rotation: each login ends (no new login, its sessions ended), what it
/// owns goes to the master, it is dropped, and only then are its stored
/// credentials deleted. A role dbroles did not create is refused, unless `adopt`.
pub async fn revoke_roles(
    target: &Target,
    prefix: &str,
    secrets: &dyn SecretStore,
    secret_ref: &SecretRef,
    levels: &[Level],
    adopt: bool,
) -> Result<Outcome, ProvisionError> {
    let roles: Vec<RoleSpec> = levels.iter().map(|level| RoleSpec::new(prefix, *level).alternating(prefix)).collect();
    let refs: Vec<SecretRef> = roles.iter().map(|role| SecretRef { user: role.user.clone(), ..secret_ref.clone() }).collect();
    let session = engine::Session::new(target);
    let survey = session.survey(&roles).await?;
    let mut refusals = Vec::new();
    for (role, secret) in roles.iter().zip(&refs) {
        let stored = secrets.read(&secrets.secret_id(secret)).await.map_err(ProvisionError::SecretStore)?;
        refusals.push(refusal(&survey, stored.as_ref(), role, adopt));
    }
    let accepted: Vec<RoleSpec> =
        roles.iter().zip(&refusals).filter(|(_, refused)| refused.is_none()).map(|(role, _)| role.clone()).collect();
    let mut retirements = session.revoke(&accepted, &survey).await.into_iter();
    let mut results = Vec::new();
    for ((role, secret), refused) in roles.iter().zip(&refs).zip(refusals) {
        let (status, message) = match refused {
            Some(reason) => (Phase::Failed, reason),
            None => {
                let retirement = retirements.next().expect("one retirement per accepted role");
                retired(role, &survey, retirement, secrets, &secrets.secret_id(secret)).await
            }
        };
        results.push(RoleResult {
            completed_at: Timestamp::now(),
            credentials_info: Some(secrets.info(secret)),
            message,
            status,
            user_role: role.user.clone(),
            active_login: None,
            changes: None,
            not_revocable: Vec::new(),
        });
    }
    Ok(Outcome { results, report: session.report(&survey) })
}

/// Plans a run on one server: each role's `changes`, what a run would do, read
/// as a run reads it (the survey, each database's privileges, the stored
/// credentials tried), and what the master may not revoke. Nothing is written to
/// the database or the stores.
pub async fn plan_roles(
    target: &Target,
    prefix: &str,
    secrets: &dyn SecretStore,
    secret_ref: &SecretRef,
    options: Options<'_>,
) -> Result<Outcome, ProvisionError> {
    let roles: Vec<RoleSpec> = specs(prefix, options).map(|role| RoleSpec { login: None, ..role }).collect();
    let session = engine::Session::scoped(target, options.scope.engine());
    let survey = session.survey(&roles).await?;
    let drifts = session.plan(&roles, &survey).await;
    let mut results = Vec::new();
    for (role, mut drift) in roles.iter().zip(drifts) {
        let secret = SecretRef { user: role.user.clone(), ..secret_ref.clone() };
        let stored = secrets.read(&secrets.secret_id(&secret)).await.map_err(ProvisionError::SecretStore)?;
        let (status, message) = match refusal(&survey, stored.as_ref(), role, options.adopt) {
            Some(reason) => (Phase::Failed, format!("a run would refuse it: {reason}")),
            None => {
                if let Some(change) = password_change(&session, &survey, stored.as_ref()).await {
                    drift.changes.push(change);
                }
                planned(role, &drift)
            }
        };
        let mut changes = drift.changes;
        if changes.len() > PLAN_LINES {
            let more = changes.len() - PLAN_LINES;
            changes.truncate(PLAN_LINES);
            changes.push(format!("... and {more} more"));
        }
        results.push(RoleResult {
            completed_at: Timestamp::now(),
            credentials_info: Some(secrets.info(&secret)),
            message,
            status,
            user_role: role.user.clone(),
            active_login: None,
            changes: Some(changes),
            not_revocable: drift.not_revocable,
        });
    }
    Ok(Outcome { results, report: session.report(&survey) })
}

/// The most changes a role's plan lists; a line says how many more there are.
const PLAN_LINES: usize = 200;

/// The levels of the scope, as a run of these options makes them.
fn specs<'a>(prefix: &'a str, options: Options<'a>) -> impl Iterator<Item = RoleSpec> + 'a {
    options.scope.levels().into_iter().map(move |level| {
        let role = RoleSpec::new(prefix, level);
        if options.rotation.is_alternating() {
            role.alternating(prefix)
        } else {
            role
        }
    })
}

/// The password a run would set: none if the stored credentials log in.
async fn password_change(session: &engine::Session, survey: &Survey, stored: Option<&RoleCredentials>) -> Option<String> {
    let Some(stored) = stored else { return Some("password: no stored credentials".into()) };
    let exists = survey.existing(&stored.user).is_some();
    match exists && session.check_login(&stored.user, &stored.password).await.is_ok() {
        true => None,
        false => Some(format!("password: the stored credentials of {} do not log in", stored.user)),
    }
}

/// A role's plan as its result says it.
fn planned(role: &RoleSpec, drift: &engine::Drift) -> (Phase, String) {
    if !drift.failed.is_empty() {
        return (Phase::Failed, format!("role {} could not be planned in full: {}", role.user, drift.failed.join("; ")));
    }
    let mut message = match drift.changes.len() {
        0 => format!("role {} is in sync: a run would change nothing", role.user),
        n => format!("role {} has drifted: a run would make {n} change(s)", role.user),
    };
    if !drift.not_revocable.is_empty() {
        message += &format!("; {} privilege(s) beyond its level the master may not revoke", drift.not_revocable.len());
    }
    (Phase::Completed, message)
}

/// A role's retirement as its result says it; its stored credentials deleted once nothing of it is left.
async fn retired(
    role: &RoleSpec,
    survey: &Survey,
    retirement: engine::Retirement,
    secrets: &dyn SecretStore,
    secret_id: &str,
) -> (Phase, String) {
    let logins: Vec<&str> = role.found(survey).collect();
    if !retirement.remains.is_empty() {
        let message = format!("role {} is not retired; what remains: {}", role.user, retirement.remains.join("; "));
        return (Phase::Failed, message);
    }
    let mut message = match logins.is_empty() {
        true => format!("role {} does not exist: nothing to retire", role.user),
        false => format!(
            "role {} retired ({} dropped, {} session(s) ended, what it owned now belongs to the master)",
            role.user,
            logins.join(" and "),
            retirement.sessions_ended
        ),
    };
    match secrets.delete(secret_id).await {
        Ok(()) => message += "; its stored credentials are deleted",
        Err(error) => return (Phase::Failed, format!("{message}; its stored credentials could not be deleted: {error}")),
    }
    (Phase::Completed, message)
}

/// What the store holds for a role before the run changes anything.
struct Prior {
    /// A password a run cut short had staged logs in, and is promoted.
    recovered: bool,
    /// The credentials stored now.
    stored: Option<RoleCredentials>,
}

/// Reads what the store holds for `role`, after promoting a password a run cut
/// short had staged, if it logs in. Changes nothing in the database.
async fn prior(
    session: &engine::Session,
    secrets: &dyn SecretStore,
    secret: &SecretRef,
    role: &RoleSpec,
) -> Result<Prior, ProvisionError> {
    let secret_id = secrets.secret_id(secret);
    let recovered = recover(session, secrets, &secret_id, role).await.map_err(ProvisionError::SecretStore)?;
    let stored = secrets.read(&secret_id).await.map_err(ProvisionError::SecretStore)?;
    Ok(Prior { recovered, stored })
}

/// One role before any change: a refusal if it is not dbroles', or the login
/// whose new password is staged. Also the login the stored credentials name, if it is one of the level's.
async fn prepare(
    survey: &Survey,
    secrets: &dyn SecretStore,
    secret: &SecretRef,
    endpoint: &Endpoint,
    role: &mut RoleSpec,
    prior: Prior,
    adopt: bool,
) -> Result<(Step, Option<String>), ProvisionError> {
    let Prior { recovered, stored } = prior;
    let active = stored.as_ref().map(|stored| stored.user.clone()).filter(|user| role.logins().any(|login| login == user));
    if let Some(reason) = refusal(survey, stored.as_ref(), role, adopt) {
        return Ok((Step::Refused(reason), active));
    }
    role.login = next_login(role, stored.as_ref(), survey, recovered);
    let Some(login) = role.login.clone() else { return Ok((Step::Kept, active)) };
    let staged = secrets.stage(secret, &credentials(role, &login, endpoint, stored.as_ref())).await;
    Ok((Step::Staged(staged.map_err(ProvisionError::SecretStore)?), active))
}

/// A role once the passwords are set (`set`: its result, if it was set): a new
/// password that logs in is promoted.
async fn settled(
    session: &engine::Session,
    secrets: &dyn SecretStore,
    role: &RoleSpec,
    step: Step,
    set: Option<Result<(), engine::DbError>>,
) -> Step {
    match (set, step) {
        (None, step) => step,
        (Some(Err(error)), _) => Step::Failed(error.message),
        (Some(Ok(())), Step::Staged(staged)) => promote(session, secrets, role, &staged).await,
        (Some(Ok(())), _) => Step::Kept,
    }
}

/// The login whose password this run sets. Under the single rotation the level's
/// role. Under the alternating one the login the stored credentials do not name,
/// so those keep working; none if a run cut short had already rotated it (and
/// this run promoted that), which would otherwise change the login consumers hold.
fn next_login(role: &RoleSpec, stored: Option<&RoleCredentials>, survey: &Survey, recovered: bool) -> Option<String> {
    let Some(alternate) = &role.alternate else { return Some(role.user.clone()) };
    if recovered {
        return None;
    }
    let active = stored.map(|stored| stored.user.as_str()).filter(|user| survey.existing(user).is_some());
    Some(if active == Some(role.user.as_str()) { alternate.clone() } else { role.user.clone() })
}

fn credentials(role: &RoleSpec, login: &str, endpoint: &Endpoint, stored: Option<&RoleCredentials>) -> RoleCredentials {
    // Every login of the level is recorded as dbroles', also after a return to the single rotation.
    let logins = match &role.alternate {
        Some(_) => role.logins().map(str::to_string).collect(),
        None => stored.map(|stored| stored.logins.clone()).unwrap_or_default(),
    };
    RoleCredentials {
        host: endpoint.host.clone(),
        port: endpoint.port,
        user: login.to_string(),
        password: role.password.clone(),
        db: endpoint.db.clone(),
        engine: endpoint.engine.clone(),
        logins,
    }
}

/// A staged password newer than the current one is promoted if it logs in: the
/// database has it, and consumers must read it. One that does not log in is left.
/// It is tried only on one of the level's own logins. Whether one was promoted.
async fn recover(
    session: &engine::Session,
    secrets: &dyn SecretStore,
    secret_id: &str,
    role: &RoleSpec,
) -> Result<bool, SecretError> {
    let Some((staged, credentials)) = secrets.pending(secret_id).await? else { return Ok(false) };
    let login = role.logins().find(|login| *login == credentials.user).unwrap_or(&role.user);
    if session.check_login(login, &credentials.password).await.is_err() {
        return Ok(false);
    }
    tracing::info!(user = login, "promoting the password a run cut short had set");
    confirm(secrets, &staged).await?;
    Ok(true)
}

/// Why an existing role is left alone: dbroles did not create it (and `adopt` is
/// off). A login is dbroles' if the engine marked it (a comment on PostgreSQL) or
/// the level's stored credentials name it (MySQL and MariaDB cannot mark a user;
/// roles made before marks existed).
fn refusal(survey: &Survey, stored: Option<&RoleCredentials>, role: &RoleSpec, adopt: bool) -> Option<String> {
    let ours = |login: &str| stored.is_some_and(|stored| login == role.user || stored.names(login));
    let foreign = role
        .logins()
        .find(|login| survey.existing(login).is_some_and(|existing| existing.managed != Some(true) && !ours(login)))?;
    (!adopt).then(|| {
        format!("{foreign} exists and dbroles did not create it: send aws.adopt_existing_roles: true to take it over (its password and privileges will change)")
    })
}

/// The new password logs in, then it is promoted (a few attempts): the
/// consumer-visible password works. If it cannot be promoted, what consumers
/// read must still log in: under the alternating rotation it does (its login's
/// password did not change); otherwise the previous password is put back.
async fn promote(session: &engine::Session, secrets: &dyn SecretStore, role: &RoleSpec, staged: &Staged) -> Step {
    let login = role.login.as_deref().unwrap_or(&role.user);
    if let Err(error) = session.check_login(login, &role.password).await {
        return Step::Failed(format!("the new password of {login} did not log in: {}", error.message));
    }
    let Err(error) = confirm(secrets, staged).await else { return Step::Promoted };
    if role.alternate.is_some() {
        return Step::Failed(format!(
            "the new password of {login} works but promoting it failed ({error}): consumers keep the login the store names, \
             whose password did not change; the next run promotes the new one"
        ));
    }
    let restored = match secrets.read(&staged.secret_id).await {
        Ok(Some(previous)) => restore(session, role, previous.password).await,
        Ok(None) => "there was no previous password; the next run promotes the new one".to_string(),
        Err(read) => format!("the previous password could not be read ({read}); the next run promotes the new one"),
    };
    Step::Failed(format!("the new password works but promoting it failed ({error}): {restored}"))
}

/// Gives a role back the password consumers read: what became of it.
async fn restore(session: &engine::Session, role: &RoleSpec, previous: secrecy::SecretString) -> String {
    let back = RoleSpec { password: previous, ..role.clone() };
    let restored = match session.survey(std::slice::from_ref(&back)).await {
        Ok(survey) => match session.set_passwords(std::slice::from_ref(&back), &survey).await {
            Ok(mut results) => results.remove(0).map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        },
        Err(error) => Err(error.to_string()),
    };
    match restored {
        Ok(()) => "the previous password is back in place".to_string(),
        Err(error) => format!("the previous password could not be put back ({error}); the next run promotes the new one"),
    }
}

async fn confirm(secrets: &dyn SecretStore, staged: &Staged) -> Result<(), SecretError> {
    let mut wait = std::time::Duration::from_millis(100);
    for _ in 1..CONFIRM_ATTEMPTS {
        match secrets.confirm(staged).await {
            Ok(()) => return Ok(()),
            Err(error) => tracing::warn!(secret_id = staged.secret_id, %error, "promoting the staged password failed; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    secrets.confirm(staged).await
}

/// Attempts at promoting a password that logs in.
const CONFIRM_ATTEMPTS: u32 = 3;

fn result(
    role: &RoleSpec,
    step: Step,
    grants: Option<Grants>,
    databases: usize,
    info: CredentialsInfo,
    active_login: Option<String>,
) -> RoleResult {
    let not_revocable = grants.as_ref().map(|grants| grants.not_revocable.clone()).unwrap_or_default();
    let (status, mut message) = match (step, grants) {
        (Step::Refused(message) | Step::Failed(message), _) => (Phase::Failed, message),
        (_, Some(grants)) if !grants.failed.is_empty() => {
            let failures: Vec<&str> = grants.failed.iter().map(|e| e.message.as_str()).collect();
            (Phase::Failed, format!("the new password works and is stored; grants failed: {}", failures.join("; ")))
        }
        (step, grants) => {
            let skipped = grants.map(|g| g.skipped).unwrap_or_default();
            let mut message = format!("role {} provisioned in {databases} database(s)", role.user);
            if matches!(step, Step::Kept) {
                message += "; the password a run cut short had set is promoted, and no other changed";
            }
            if !skipped.is_empty() {
                message += &format!("; the master could not grant: {}", skipped.join(", "));
            }
            (Phase::Completed, message)
        }
    };
    if let Some(login) = &active_login {
        message += &format!("; consumers log in as {login}");
    }
    if !not_revocable.is_empty() {
        message +=
            &format!("; {} privilege(s) beyond its level the master may not revoke (see not_revocable)", not_revocable.len());
    }
    RoleResult {
        completed_at: Timestamp::now(),
        credentials_info: Some(info),
        message,
        status,
        user_role: role.user.clone(),
        active_login,
        changes: None,
        not_revocable,
    }
}

/// Provisions the roles on `instance` for a job of `org`: each role's result, or why none could be.
pub async fn provision_instance(
    instance: &Instance,
    org: &str,
    job_id: &str,
    options: Options<'_>,
    inventory: &dyn Inventory,
    secrets: &dyn SecretStore,
    settings: &Settings,
) -> Result<Vec<RoleResult>, ProvisionError> {
    let family = Family::of(&instance.engine).ok_or_else(|| ProvisionError::UnsupportedEngine(instance.engine.clone()))?;
    let alternating = options.rotation.is_alternating() && options.mode.follows_rotation();
    engine::validate_prefix(&settings.role_prefix, &instance.engine, alternating).map_err(ProvisionError::InvalidPrefix)?;
    let master = inventory.master_credentials(instance).await?;
    let mut target = Target {
        family,
        host: instance.host.clone(),
        port: instance.port,
        master_user: master.user,
        master_password: master.password,
        tls: settings.tls.clone(),
        connect_timeout: settings.connect_timeout,
        statement_timeout: settings.statement_timeout,
        max_connections: options.max_connections.unwrap_or(settings.max_db_connections),
    };
    // A reset that set a new master password and was cut short before promoting it.
    if let Some(pending) = master.pending {
        if engine::check_login(&target, &target.master_user, &pending).await.is_ok() {
            inventory.promote_master_password(instance).await?;
            target.master_password = pending;
        }
    }
    let secret_ref = SecretRef::for_instance(instance, org, job_id);
    let endpoint = endpoint_of(instance, family);
    let prefix = &settings.role_prefix;
    let outcome = match options.mode {
        Mode::Run => provision_roles(&target, &endpoint, prefix, secrets, &secret_ref, options).await?,
        Mode::Revoke => revoke_roles(&target, prefix, secrets, &secret_ref, &options.scope.levels(), options.adopt).await?,
        Mode::Plan => plan_roles(&target, prefix, secrets, &secret_ref, options).await?,
    };
    Ok(outcome.results)
}

/// What the credentials name: the instance's own endpoint and its default database.
fn endpoint_of(instance: &Instance, family: Family) -> Endpoint {
    let db = match (family, instance.db_name.as_str()) {
        (_, name) if !name.is_empty() => name.to_string(),
        (Family::Postgres, _) => "postgres".to_string(),
        (Family::MySql, _) => String::new(),
    };
    Endpoint { host: instance.endpoint_host.clone(), port: instance.endpoint_port, db, engine: instance.engine.clone() }
}
