//! The web UI's accounts: a name, a role and an Argon2id password hash per user, kept in the
//! node's store. Nothing here is synced: accounts belong to one node.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
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

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: UserRole,
    /// PHC string of the Argon2id hash.
    pub password_hash: String,
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
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
    /// Creates or replaces an account.
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
        };
        let bytes = postcard::to_stdvec(&user)
            .map_err(|_| StoreError::Refused("cannot encode the account".into()))?;
        let tx = self.db.begin_write()?;
        tx.open_table(USERS)?.insert(name, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an account; returns whether it existed.
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
            out.push(
                postcard::from_bytes(row?.1.value())
                    .map_err(|_| StoreError::Corrupt("an account".into()))?,
            );
        }
        Ok(out)
    }

    /// The account if the password is right.
    pub fn check_password(&self, name: &str, password: &str) -> Result<Option<User>, StoreError> {
        if password.chars().count() > PASSWORD_LENGTH_MAX_CHARS {
            return Ok(None);
        }
        let Some(user) = self.users()?.into_iter().find(|u| u.name == name) else {
            // Same work whether or not the user exists.
            let _ = argon2::Argon2::default().hash_password(
                password.as_bytes(),
                &SaltString::generate(&mut rand::rngs::OsRng),
            );
            return Ok(None);
        };
        let ok = PasswordHash::new(&user.password_hash)
            .ok()
            .is_some_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            });
        Ok(ok.then_some(user))
    }
}
