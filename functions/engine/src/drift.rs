//! What a run would change on a role, in the words a plan uses, and what the
//! master may not change. The engines find the privileges; this module words them.
//!
//! A plan lists what the roles hold beyond their level first (the revocations),
//! then what they lack (the grants). Privileges on one object go on one line:
//! `grant SELECT, INSERT on table app.public.items`.

use super::{Escalation, RoleSpec, Survey};

/// What a run would change on one role, and what it may not.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Drift {
    /// What a run would do, revocations first.
    pub changes: Vec<String>,
    /// What the role holds beyond its level that the master may not revoke,
    /// with who granted it: a run reports it rather than claiming it done.
    pub not_revocable: Vec<String>,
    /// What could not be read (a database the master could not enter meanwhile):
    /// the plan is incomplete there.
    pub failed: Vec<String>,
}

/// What a plan found on one role, before it is worded.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub changes: Vec<Change>,
    pub not_revocable: Vec<String>,
    pub failed: Vec<String>,
}

impl Findings {
    pub fn add(&mut self, more: Findings) {
        self.changes.extend(more.changes);
        self.not_revocable.extend(more.not_revocable);
        self.failed.extend(more.failed);
    }

    /// The findings as lines: the revocations first, in the order found.
    pub fn into_drift(self) -> Drift {
        let (revokes, grants): (Vec<Change>, Vec<Change>) = self.changes.into_iter().partition(|change| change.revoke);
        let mut changes = lines(&revokes);
        changes.extend(lines(&grants));
        Drift { changes, not_revocable: self.not_revocable, failed: self.failed }
    }
}

/// One privilege to grant or revoke on one object. Its line reads
/// `{head} {privilege}{tail}`: `grant SELECT on table db.s.t`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub revoke: bool,
    pub head: String,
    pub privilege: String,
    pub tail: String,
}

impl Change {
    pub fn grant(privilege: &str, on: &str) -> Self {
        Self { revoke: false, head: "grant".into(), privilege: privilege.into(), tail: format!(" on {on}") }
    }

    pub fn revoke(privilege: &str, on: &str, why: &str) -> Self {
        Self { revoke: true, head: "revoke".into(), privilege: privilege.into(), tail: format!(" on {on} ({why})") }
    }

    /// A change to the role itself (`create role`, `remove CREATEDB`): one line of its own.
    pub fn whole(revoke: bool, line: String) -> Self {
        Self { revoke, head: line, privilege: String::new(), tail: String::new() }
    }
}

/// The changes as lines, a line per object and kind of change.
fn lines(changes: &[Change]) -> Vec<String> {
    let mut lines: Vec<(&Change, Vec<&str>)> = Vec::new();
    for change in changes {
        match lines.iter_mut().find(|(first, _)| first.head == change.head && first.tail == change.tail) {
            Some((_, privileges)) if !change.privilege.is_empty() => privileges.push(&change.privilege),
            Some(_) => {}
            None => lines.push((change, vec![change.privilege.as_str()])),
        }
    }
    lines
        .into_iter()
        .map(|(change, privileges)| match change.privilege.is_empty() {
            true => change.head.clone(),
            false => format!("{} {}{}", change.head, privileges.join(", "), change.tail),
        })
        .collect()
}

/// What a run would change on the roles themselves, before any grant: the
/// logins it creates, what their level does not allow, the mark it sets. Under
/// the alternating strategy the second login is made at a later rotation, so its
/// absence is no change.
pub(crate) fn role_changes(role: &RoleSpec, survey: &Survey) -> Findings {
    let (mut changes, mut not_revocable) = (Vec::new(), Vec::new());
    if survey.existing(&role.user).is_none() {
        changes.push(Change::whole(false, format!("create role {}", role.user)));
    }
    for existing in role.logins().filter_map(|login| survey.existing(login)) {
        let user = &existing.user;
        for escalation in &existing.escalations {
            match escalation.needs_superuser() && !survey.master_is_superuser {
                true => not_revocable.push(format!("{escalation} of {user} (only a superuser may remove it)")),
                false => changes.push(Change::whole(true, removal(user, escalation))),
            }
        }
        if existing.managed == Some(false) {
            changes.push(Change::whole(false, format!("mark {user} as managed by dbroles")));
        }
    }
    Findings { changes, not_revocable, failed: Vec::new() }
}

fn removal(user: &str, escalation: &Escalation) -> String {
    match escalation {
        Escalation::Attribute(name) => format!("remove {name} from {user}"),
        Escalation::MemberOf(group) => format!("revoke membership of {group} from {user}"),
        Escalation::Global(privilege) => format!("revoke the global privilege {privilege} from {user}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_on_one_object_share_a_line_and_revocations_come_first() {
        let changes = vec![
            Change::whole(false, "create role p_ro".into()),
            Change::grant("SELECT", "table db.public.a"),
            Change::revoke("INSERT", "table db.public.b", "not in level ro"),
            Change::grant("INSERT", "table db.public.a"),
            Change::revoke("UPDATE", "table db.public.b", "not in level ro"),
            Change::revoke("SELECT", "table other.public.c", "outside the scope"),
        ];
        let drift = Findings { changes, not_revocable: vec!["x".into()], failed: Vec::new() }.into_drift();
        assert_eq!(
            drift.changes,
            [
                "revoke INSERT, UPDATE on table db.public.b (not in level ro)",
                "revoke SELECT on table other.public.c (outside the scope)",
                "create role p_ro",
                "grant SELECT, INSERT on table db.public.a",
            ]
        );
        assert_eq!(drift.not_revocable, ["x"]);
    }
}
