//! What the managed logins hold in one database, read from the catalog's ACLs,
//! against what their level allows there: the privileges a run must grant, those
//! it must revoke, and those the master may not revoke.
//!
//! A master that is not a superuser revokes a grant only as its grantor: as the
//! object's owner when it holds the owner's rights, or as itself. A REVOKE of
//! a grant someone else made reports success and leaves the ACL as it was, so
//! such grants are named ("granted by X") rather than revoked.

use std::collections::HashSet;

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::{quote_ident, Grantable};
use crate::drift::Change;
use crate::{Globs, Level, RoleSpec};

/// The privileges of each level on tables (views included) and on sequences.
pub(super) fn level_privileges(level: Level) -> (&'static [&'static str], &'static [&'static str]) {
    match level {
        Level::Ro => (&["SELECT"], &["SELECT"]),
        Level::Rw => (&["SELECT", "INSERT", "UPDATE", "DELETE"], &["USAGE", "SELECT", "UPDATE"]),
        // No TRIGGER: a trigger on another role's table would run ddl's code as that role.
        Level::Ddl => (&["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES"], &["USAGE", "SELECT", "UPDATE"]),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Database,
    Schema,
    Table,
    Sequence,
    Column,
    Function,
    /// Default privileges (`ALTER DEFAULT PRIVILEGES`) of an owner.
    Default,
}

impl Kind {
    fn parse(text: &str) -> Self {
        match text {
            "database" => Kind::Database,
            "schema" => Kind::Schema,
            "table" => Kind::Table,
            "sequence" => Kind::Sequence,
            "column" => Kind::Column,
            "function" => Kind::Function,
            _ => Kind::Default,
        }
    }
}

/// One privilege a managed login holds, as an ACL says it.
#[derive(Clone, Debug)]
pub(super) struct Held {
    kind: Kind,
    /// The schema of the object (`None`: the database, or default privileges in every schema).
    schema: Option<String>,
    /// The object as SQL names it (`s.t`, quoted where needed; `f(integer)`);
    /// the schema's own name; the owner's name for default privileges.
    name: String,
    /// The column, or the kind of object default privileges apply to (`r`, `S`, `f`, `T`, `n`).
    detail: String,
    privilege: String,
    grant_option: bool,
    grantee: String,
    grantor: String,
    /// The master may revoke it (it is the grantor, or holds the grantor's rights as the owner).
    revocable: bool,
    /// A function that runs as its caller and belongs to no extension.
    runs_as_caller: bool,
}

/// Every ACL entry of the logins `$1` in the connected database, outside the
/// system schemas: on what, who granted it, and whether the master may revoke it.
/// Column ACLs are read once, before the join: the planner would otherwise scan
/// `pg_attribute` once per schema.
const HELD: &str = "WITH cols AS MATERIALIZED (SELECT attrelid, attname, attacl FROM pg_catalog.pg_attribute \
       WHERE attacl IS NOT NULL AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped), \
     o(kind, nsp, name, detail, owner, acl, caller) AS ( \
       SELECT 'database', NULL::pg_catalog.text, ''::pg_catalog.text, '', datdba, datacl, true \
         FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database() \
       UNION ALL SELECT 'schema', nspname::pg_catalog.text, nspname::pg_catalog.text, '', nspowner, nspacl, true \
         FROM pg_catalog.pg_namespace \
       UNION ALL SELECT CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'S' THEN 'sequence' ELSE 'table' END, \
         n.nspname::pg_catalog.text, pg_catalog.format('%I.%I', n.nspname, c.relname), '', c.relowner, c.relacl, true \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,v,m,f,S}'::pg_catalog.\"char\"[]) \
       UNION ALL SELECT 'column', n.nspname::pg_catalog.text, pg_catalog.format('%I.%I', n.nspname, c.relname), \
         a.attname::pg_catalog.text, c.relowner, a.attacl, true \
         FROM cols a JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
       UNION ALL SELECT 'function', n.nspname::pg_catalog.text, p.oid::pg_catalog.regprocedure::pg_catalog.text, '', \
         p.proowner, p.proacl, NOT p.prosecdef AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
           WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
           AND d.objid OPERATOR(pg_catalog.=) p.oid AND d.deptype OPERATOR(pg_catalog.=) 'e') \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace \
       UNION ALL SELECT 'default', n.nspname::pg_catalog.text, pg_catalog.pg_get_userbyid(d.defaclrole)::pg_catalog.text, \
         d.defaclobjtype::pg_catalog.text, d.defaclrole, d.defaclacl, true \
         FROM pg_catalog.pg_default_acl d \
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) d.defaclnamespace) \
     SELECT o.kind, o.nsp, o.name, o.detail, a.privilege_type, a.is_grantable, g.rolname::pg_catalog.text, \
       pg_catalog.pg_get_userbyid(a.grantor)::pg_catalog.text, \
       CASE WHEN o.kind OPERATOR(pg_catalog.=) 'default' THEN pg_catalog.pg_has_role(o.owner, 'USAGE') \
         ELSE (a.grantor OPERATOR(pg_catalog.=) o.owner AND pg_catalog.pg_has_role(o.owner, 'USAGE')) \
           OR (a.grantor OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles \
         WHERE rolname OPERATOR(pg_catalog.=) CURRENT_USER) \
       AND NOT pg_catalog.pg_has_role(o.owner, 'USAGE')) END, \
       o.caller \
     FROM o CROSS JOIN LATERAL pg_catalog.aclexplode(o.acl) a \
     JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee \
     WHERE g.rolname OPERATOR(pg_catalog.=) ANY($1) AND a.grantee OPERATOR(pg_catalog.<>) o.owner \
     AND NOT (coalesce(o.nsp, '') OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema,pg_toast}'::pg_catalog.text[])) \
     AND NOT (coalesce(o.nsp, '') OPERATOR(pg_catalog.~~) 'pg\\_%temp\\_%'::pg_catalog.text)";

/// What the logins hold in the connected database, outside the system schemas;
/// the privileges an owner has on what it owns are not listed.
pub(super) async fn held(client: &Client, logins: &[&str]) -> Result<Vec<Held>, tokio_postgres::Error> {
    let rows = client.query_typed(HELD, &[(&logins, Type::TEXT_ARRAY)]).await?;
    let mut held: Vec<Held> = rows
        .iter()
        .map(|row| Held {
            kind: Kind::parse(row.get(0)),
            schema: row.get(1),
            name: row.get(2),
            detail: row.get(3),
            privilege: row.get(4),
            grant_option: row.get(5),
            grantee: row.get(6),
            grantor: row.get(7),
            revocable: row.get(8),
            runs_as_caller: row.get(9),
        })
        .collect();
    // In the order a plan lists them (sorted here: the server's sort cost more than the rest of its reading).
    held.sort_by(|a, b| (a.kind, &a.schema, &a.name, &a.detail).cmp(&(b.kind, &b.schema, &b.name, &b.detail)));
    Ok(held)
}

/// One role's difference in one database: what to grant and revoke, the
/// statements that revoke, and what may not be revoked.
#[derive(Debug, Default)]
pub(super) struct Difference {
    pub changes: Vec<Change>,
    /// What the level lacks, granted: nothing on a server where nothing changed.
    pub grants: Vec<String>,
    pub revokes: Vec<String>,
    pub not_revocable: Vec<String>,
}

/// Where the role stands in one database and the schemas its scope covers
/// there (`whole`: the database is outside the scope).
pub(super) struct Place<'a> {
    pub db: &'a str,
    pub schemas: &'a Globs,
    pub whole: bool,
    pub master: &'a str,
    pub ddl: Option<&'a str>,
}

/// What `role` holds beyond its level (its second login holds nothing of its
/// own), and what of its level it lacks among what the master may grant.
pub(super) fn difference(place: &Place, found: &Grantable, role: &RoleSpec, held: &[Held]) -> Difference {
    let mut difference = Difference::default();
    for h in held.iter().filter(|h| role.logins().any(|login| login == h.grantee)) {
        let (privilege, why, option_only) = match (excess(place, role, h), h.grant_option) {
            (Some(why), _) => (h.privilege.clone(), why, false),
            (None, true) => {
                let why = "a grant option is never part of a level".to_string();
                (format!("the grant option of {}", h.privilege), why, true)
            }
            (None, false) => continue,
        };
        let mut on = describe(place.db, h);
        if h.grantee != role.user {
            on += &format!(" from {}", h.grantee);
        }
        match h.revocable {
            true => {
                difference.changes.push(Change::revoke(&privilege, &on, &why));
                difference.revokes.push(revoke_statement(place.db, h, option_only));
            }
            false => difference.not_revocable.push(format!("{privilege} on {on} ({why}; granted by {})", h.grantor)),
        }
    }
    if !place.whole {
        let missing = missing(place, found, role, held);
        difference.grants = grant_statements(place.db, role, &missing);
        difference.changes.extend(missing.iter().map(|wanted| wanted.change(place.db)));
    }
    difference
}

/// What of its level, among what the master may grant, the role does not hold.
fn missing(place: &Place, found: &Grantable, role: &RoleSpec, held: &[Held]) -> Vec<Wanted> {
    // One lookup per privilege wanted: a database of thousands of tables wants tens of thousands.
    let holds: HashSet<Key> = held
        .iter()
        .filter(|h| h.grantee == role.user)
        .map(|h| key(h.kind, &h.schema, &h.name, &h.detail, &h.privilege))
        .collect();
    let has = |w: &Wanted| holds.contains(&key(w.kind, &w.schema, &w.name, &w.detail, w.privilege));
    desired(place, found, role).into_iter().filter(|wanted| !has(wanted)).collect()
}

/// A privilege on an object: the schema counts only for default privileges
/// (the other objects' names hold it), whose `name` is the owner's.
type Key<'a> = (Kind, Option<&'a str>, &'a str, &'a str, &'a str);

fn key<'a>(kind: Kind, schema: &'a Option<String>, name: &'a str, detail: &'a str, privilege: &'a str) -> Key<'a> {
    let schema = if kind == Kind::Default { schema.as_deref() } else { None };
    (kind, schema, name, detail, privilege)
}

/// The statements that grant what is missing: the privileges of one object in
/// one statement, and objects of one kind missing the same privileges in one
/// statement too (`GRANT SELECT ON TABLE a, b TO r`).
fn grant_statements(db: &str, role: &RoleSpec, missing: &[Wanted]) -> Vec<String> {
    // Each object's privileges (they come one object after another).
    let mut objects: Vec<(&Wanted, Vec<&str>)> = Vec::new();
    for wanted in missing {
        match objects.last_mut() {
            Some((last, privileges)) if last.same_object(wanted) => privileges.push(wanted.privilege),
            _ => objects.push((wanted, vec![wanted.privilege])),
        }
    }
    let mut grants: Vec<Grant> = Vec::new();
    for (wanted, privileges) in objects {
        let privileges = privileges.join(", ");
        // Default privileges name an owner and a schema each: one statement apiece.
        let joins = |grant: &&mut Grant| {
            grant.first.kind == wanted.kind && wanted.kind != Kind::Default && grant.privileges == privileges
        };
        match grants.iter_mut().find(joins) {
            Some(grant) => grant.objects.push(wanted),
            None => grants.push(Grant { first: wanted, privileges, objects: vec![wanted] }),
        }
    }
    let grantee = quote_ident(&role.user);
    grants.iter().map(|grant| grant.statement(db, &grantee)).collect()
}

/// One GRANT: objects of one kind, missing the same privileges.
struct Grant<'a> {
    first: &'a Wanted,
    privileges: String,
    objects: Vec<&'a Wanted>,
}

impl Grant<'_> {
    fn statement(&self, db: &str, grantee: &str) -> String {
        let privileges = &self.privileges;
        let names = |quote: fn(&str) -> String| self.objects.iter().map(|o| quote(&o.name)).collect::<Vec<_>>().join(", ");
        let as_is = |name: &str| name.to_string();
        match self.first.kind {
            Kind::Database => format!("GRANT {privileges} ON DATABASE {} TO {grantee}", quote_ident(db)),
            Kind::Schema => format!("GRANT {privileges} ON SCHEMA {} TO {grantee}", names(quote_ident)),
            Kind::Table | Kind::Column => format!("GRANT {privileges} ON TABLE {} TO {grantee}", names(as_is)),
            Kind::Sequence => format!("GRANT {privileges} ON SEQUENCE {} TO {grantee}", names(as_is)),
            Kind::Function => format!("GRANT {privileges} ON FUNCTION {} TO {grantee}", names(as_is)),
            Kind::Default => format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {privileges} ON {} TO {grantee}",
                quote_ident(&self.first.name),
                quote_ident(self.first.schema.as_deref().unwrap_or_default()),
                objects_of(&self.first.detail)
            ),
        }
    }
}

/// Why a privilege held is beyond the level; `None` if the level allows it.
fn excess(place: &Place, role: &RoleSpec, h: &Held) -> Option<String> {
    if h.grantee != role.user {
        return Some("a second login holds nothing of its own; its level's role does".into());
    }
    let in_scope = !place.whole && h.schema.as_deref().is_none_or(|schema| place.schemas.covers(schema));
    if !in_scope {
        return Some("outside the scope".into());
    }
    let (tables, sequences) = level_privileges(role.level);
    let p = h.privilege.as_str();
    let allowed = match h.kind {
        Kind::Database => p == "CONNECT",
        Kind::Schema => p == "USAGE" || (p == "CREATE" && role.level == Level::Ddl),
        Kind::Table | Kind::Column => tables.contains(&p),
        Kind::Sequence => sequences.contains(&p),
        Kind::Function => p == "EXECUTE" && role.level != Level::Ro && h.runs_as_caller,
        Kind::Default => match (h.schema.is_some(), h.detail.as_str()) {
            (true, "r") => tables.contains(&p),
            (true, "S") => sequences.contains(&p),
            _ => false,
        },
    };
    (!allowed).then(|| format!("not in level {}", role.level.suffix()))
}

/// One privilege of the level on one object the master may grant.
struct Wanted {
    kind: Kind,
    /// The schema, for default privileges (whose `name` is the owner's).
    schema: Option<String>,
    name: String,
    detail: String,
    privilege: &'static str,
    /// The object, as a plan names it.
    on: String,
}

impl Wanted {
    fn new(kind: Kind, name: &str, privilege: &'static str, on: String) -> Self {
        Self { kind, schema: None, name: name.to_string(), detail: String::new(), privilege, on }
    }

    fn same_object(&self, other: &Wanted) -> bool {
        (self.kind, &self.schema, &self.name, &self.detail) == (other.kind, &other.schema, &other.name, &other.detail)
    }

    fn change(&self, db: &str) -> Change {
        match self.kind {
            Kind::Default => Change {
                revoke: false,
                head: format!(
                    "set default privileges for role {} in schema {db}.{}:",
                    self.name,
                    self.schema.as_deref().unwrap_or_default()
                ),
                privilege: self.privilege.to_string(),
                tail: format!(" on {}", objects_of(&self.detail).to_lowercase()),
            },
            _ => Change::grant(self.privilege, &self.on),
        }
    }
}

/// What the level should hold of what the master may grant: CONNECT, USAGE (and
/// CREATE for ddl) on the schemas, the level's privileges on the tables and
/// sequences, EXECUTE (rw, ddl) on functions that run as their caller, and the
/// same on what the master and ddl make later (default privileges).
fn desired(place: &Place, found: &Grantable, role: &RoleSpec) -> Vec<Wanted> {
    let db = place.db;
    let (tables, sequences) = level_privileges(role.level);
    let mut wanted = Vec::new();
    if found.connect {
        wanted.push(Wanted::new(Kind::Database, "", "CONNECT", format!("database {db}")));
    }
    let owners: Vec<&str> = std::iter::once(place.master).chain(place.ddl).filter(|owner| *owner != role.user).collect();
    for schema in found.schemas.iter().filter(|schema| schema.usage) {
        let on = format!("schema {db}.{}", schema.name);
        wanted.push(Wanted::new(Kind::Schema, &schema.name, "USAGE", on.clone()));
        if role.level == Level::Ddl && schema.create {
            wanted.push(Wanted::new(Kind::Schema, &schema.name, "CREATE", on));
        }
        for owner in &owners {
            for (detail, privileges) in [("r", tables), ("S", sequences)] {
                wanted.extend(privileges.iter().map(|p| Wanted {
                    schema: Some(schema.name.clone()),
                    detail: detail.into(),
                    ..Wanted::new(Kind::Default, owner, p, String::new())
                }));
            }
        }
    }
    for (list, kind, privileges) in [(&found.tables, Kind::Table, tables), (&found.sequences, Kind::Sequence, sequences)] {
        let label = if kind == Kind::Table { "table" } else { "sequence" };
        for object in list {
            wanted.extend(privileges.iter().map(|p| Wanted::new(kind, object, p, format!("{label} {db}.{object}"))));
        }
    }
    if role.level != Level::Ro {
        wanted.extend(found.functions.iter().map(|f| Wanted::new(Kind::Function, f, "EXECUTE", format!("function {db}.{f}"))));
    }
    wanted
}

/// The object a privilege is held on, as a plan names it.
fn describe(db: &str, h: &Held) -> String {
    match h.kind {
        Kind::Database => format!("database {db}"),
        Kind::Schema => format!("schema {db}.{}", h.name),
        Kind::Table => format!("table {db}.{}", h.name),
        Kind::Sequence => format!("sequence {db}.{}", h.name),
        Kind::Column => format!("column {} of table {db}.{}", h.detail, h.name),
        Kind::Function => format!("function {db}.{}", h.name),
        Kind::Default => {
            let objects = objects_of(&h.detail).to_lowercase();
            match &h.schema {
                Some(schema) => format!("{objects} made later by {} in schema {db}.{schema}", h.name),
                None => format!("{objects} made later by {} anywhere in {db}", h.name),
            }
        }
    }
}

/// The `ON` of `ALTER DEFAULT PRIVILEGES` for a `pg_default_acl.defaclobjtype`.
fn objects_of(detail: &str) -> &'static str {
    match detail {
        "r" => "TABLES",
        "S" => "SEQUENCES",
        "f" => "FUNCTIONS",
        "T" => "TYPES",
        _ => "SCHEMAS",
    }
}

/// The statement that revokes a privilege held (or only its grant option).
/// `CASCADE` also takes back what the grantee passed on with a grant option.
fn revoke_statement(db: &str, h: &Held, option_only: bool) -> String {
    let grantee = quote_ident(&h.grantee);
    let what = match option_only {
        true => format!("GRANT OPTION FOR {}", h.privilege),
        false => h.privilege.clone(),
    };
    let on = match h.kind {
        Kind::Database => format!("DATABASE {}", quote_ident(db)),
        Kind::Schema => format!("SCHEMA {}", quote_ident(&h.name)),
        Kind::Table => format!("TABLE {}", h.name),
        Kind::Sequence => format!("SEQUENCE {}", h.name),
        Kind::Column => return format!("REVOKE {what} ({}) ON TABLE {} FROM {grantee} CASCADE", quote_ident(&h.detail), h.name),
        Kind::Function => format!("ROUTINE {}", h.name),
        Kind::Default => {
            let schema = h.schema.as_deref().map(|schema| format!(" IN SCHEMA {}", quote_ident(schema))).unwrap_or_default();
            let objects = objects_of(&h.detail);
            return format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {}{schema} REVOKE {what} ON {objects} FROM {grantee}",
                quote_ident(&h.name)
            );
        }
    };
    format!("REVOKE {what} ON {on} FROM {grantee} CASCADE")
}
