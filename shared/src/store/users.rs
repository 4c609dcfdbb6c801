//! The web UI's accounts: a name, a role and an Argon2id password hash per user, kept in the
//! node's store, with a credential stamp that changes whenever the account does (so a web
//! session taken before a removal, a role change or a new password stops working). Nothing here
//! is synced: accounts belong to one node.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Accounts: user name → postcard `User`.
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users-1");

/// Shortest password accepted, in characters.
pub const PASSWORD_LENGTH_MIN_CHARS: usize = 10;
/// Longest password accepted, in characters (bounds the hashing work an input can cause).
pub const PASSWORD_LENGTH_MAX_CHARS: usize = 256;

/// What a user may do in the web UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// Cases and referrals of the organisation, the directory.
    Caseworker,
    /// Indicators, the directory, posters and gaps; no case data.
    Coordinator,
    /// Everything a caseworker and a coordinator may, and the node's status.
    Admin,
}

impl UserRole {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "caseworker" => Some(UserRole::Caseworker),
            "coordinator" => Some(UserRole::Coordinator),
            "admin" => Some(UserRole::Admin),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            UserRole::Caseworker => "caseworker",
            UserRole::Coordinator => "coordinator",
            UserRole::Admin => "admin",
        }
    }

    /// Whether the role may see case data (cases and referral contents).
    pub fn sees_cases(&self) -> bool {
        matches!(self, UserRole::Caseworker | UserRole::Admin)
    }
}

/// Longest user name, in bytes.
pub const USER_NAME_MAX_BYTES: usize = 64;

/// The credential stamp of accounts written before stamps existed. Every write gives a new
/// non-zero stamp, so such an account's sessions end at its first change like any other's.
pub const LEGACY_STAMP: u64 = 0;

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: UserRole,
    /// PHC string of the Argon2id hash.
    pub password_hash: String,
    /// Random, new at every write of the account (new password, new role): a web session
    /// remembers the stamp it began under and ends when the stored one differs or is gone.
    pub stamp: u64,
}

/// How accounts were stored before the stamp (postcard is not self-describing, so the old
/// rows need their own shape).
#[derive(Deserialize)]
struct UserV1 {
    name: String,
    role: UserRole,
    password_hash: String,
}

fn decode_user(bytes: &[u8]) -> Result<User, StoreError> {
    // A row without a stamp is too short for `User` and fails to decode as one.
    if let Ok(user) = postcard::from_bytes::<User>(bytes) {
        return Ok(user);
    }
    let old: UserV1 =
        postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt("an account".into()))?;
    Ok(User {
        name: old.name,
        role: old.role,
        password_hash: old.password_hash,
        stamp: LEGACY_STAMP,
    })
}

fn new_stamp() -> u64 {
    loop {
        let stamp = rand::rngs::OsRng.next_u64();
        if stamp != LEGACY_STAMP {
            return stamp;
        }
    }
}

/// A hash of a password nobody has, verified when the account asked for does not exist, so
/// a login costs the same whether or not the user exists.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2::Argon2::default()
                .hash_password(b"no account has this password", &salt)
                .ok()
                .map(|h| h.to_string())
        })
        .as_deref()
}

/// Whether `password` matches the account's stored hash (`None`: no such account, checked
/// against a dummy hash for the same cost). Pure CPU work of tens of milliseconds: callers run
/// it off the thread that owns the store.
pub fn verify_password(user: Option<&User>, password: &str) -> bool {
    if password.chars().count() > PASSWORD_LENGTH_MAX_CHARS {
        return false;
    }
    let (hash, exists) = match user {
        Some(u) => (Some(u.password_hash.as_str()), true),
        None => (dummy_hash(), false),
    };
    let ok = hash
        .and_then(|h| PasswordHash::new(h).ok())
        .is_some_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
    ok && exists
}

fn check_name(name: &str) -> Result<(), StoreError> {
    // ASCII letters, digits and three marks only: no control character, escape sequence or
    // bidirectional override can reach a terminal or a page through a user name.
    let ok = !name.is_empty()
        && name.len() <= USER_NAME_MAX_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Refused(
            "a user name is 1 to 64 letters, digits, dots, dashes or underscores".into(),
        ))
    }
}

impl Store {
    /// Creates or replaces an account, with a new credential stamp (ending its sessions).
    pub fn put_user(
        &mut self,
        name: &str,
        role: UserRole,
        password: &str,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        let n = password.chars().count();
        if !(PASSWORD_LENGTH_MIN_CHARS..=PASSWORD_LENGTH_MAX_CHARS).contains(&n) {
            return Err(StoreError::Refused(format!(
                "a password has {PASSWORD_LENGTH_MIN_CHARS} to {PASSWORD_LENGTH_MAX_CHARS} characters"
            )));
        }
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let hash = argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| StoreError::Refused(format!("cannot hash the password: {e}")))?
            .to_string();
        let user = User {
            name: name.to_string(),
            role,
            password_hash: hash,
            stamp: new_stamp(),
        };
        let bytes = postcard::to_stdvec(&user)
            .map_err(|_| StoreError::Refused("cannot encode the account".into()))?;
        let tx = self.db.begin_write()?;
        tx.open_table(USERS)?.insert(name, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an account (its sessions end: the stamp is gone with it); returns whether it
    /// existed.
    pub fn remove_user(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(USERS)?.remove(name)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    /// Every account (without checking passwords).
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, USERS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode_user(row?.1.value())?);
        }
        Ok(out)
    }

    /// One account, read quickly (no password work): for the web UI's per-request session
    /// check and to fetch the hash a login verifies elsewhere.
    pub fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        if name.is_empty() || name.len() > USER_NAME_MAX_BYTES {
            return Ok(None);
        }
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, USERS)? else {
            return Ok(None);
        };
        match table.get(name)? {
            Some(row) => Ok(Some(decode_user(row.value())?)),
            None => Ok(None),
        }
    }

    /// The account if the password is right (hashes on the calling thread: the daemon's web
    /// UI fetches the account with `user` and verifies elsewhere instead).
    pub fn check_password(&self, name: &str, password: &str) -> Result<Option<User>, StoreError> {
        let user = self.user(name)?;
        Ok(verify_password(user.as_ref(), password)
            .then_some(user)
            .flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(&dir.path().join("store.redb")).unwrap_or_else(|e| panic!("{e}"));
        (dir, store)
    }

    #[test]
    fn every_write_of_an_account_changes_its_stamp_and_removal_removes_it() {
        let (_dir, mut store) = store();
        let ok = |r: Result<(), StoreError>| r.unwrap_or_else(|e| panic!("{e}"));
        ok(store.put_user("aicha", UserRole::Caseworker, "first-password"));
        let first = store.user("aicha").ok().flatten().map(|u| u.stamp);
        ok(store.put_user("aicha", UserRole::Caseworker, "second-password"));
        let second = store.user("aicha").ok().flatten().map(|u| u.stamp);
        ok(store.put_user("aicha", UserRole::Coordinator, "second-password"));
        let third = store.user("aicha").ok().flatten().map(|u| u.stamp);
        assert!(first.is_some() && first != second && second != third);
        assert!(![first, second, third].contains(&Some(LEGACY_STAMP)));
        assert_eq!(store.remove_user("aicha").ok(), Some(true));
        assert_eq!(store.user("aicha").ok(), Some(None));
    }

    #[test]
    fn accounts_stored_before_stamps_still_open() {
        #[derive(Serialize)]
        struct Old<'a> {
            name: &'a str,
            role: UserRole,
            password_hash: &'a str,
        }
        let bytes = postcard::to_stdvec(&Old {
            name: "aicha",
            role: UserRole::Admin,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let user = decode_user(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (user.name.as_str(), user.role, user.stamp),
            ("aicha", UserRole::Admin, LEGACY_STAMP)
        );
    }

    #[test]
    fn passwords_are_checked_and_names_with_control_characters_refused() {
        let (_dir, mut store) = store();
        assert!(
            store
                .put_user("ai\u{1b}[2Jcha", UserRole::Caseworker, "first-password")
                .is_err()
        );
        assert!(
            store
                .put_user("ai\u{202e}cha", UserRole::Caseworker, "first-password")
                .is_err()
        );
        store
            .put_user("aicha", UserRole::Caseworker, "first-password")
            .unwrap_or_else(|e| panic!("{e}"));
        let user = store.user("aicha").ok().flatten();
        assert!(verify_password(user.as_ref(), "first-password"));
        assert!(!verify_password(user.as_ref(), "wrong-password"));
        assert!(!verify_password(None, "first-password"));
    }
}
