//! Web UI accounts: add or replace one, remove one, list them.

use anyhow::{Result, bail};
use passerelle_core::engine::Engine;
use passerelle_core::keys;
use passerelle_core::store::UserRole;
use serde::{Deserialize, Serialize};

use super::{Context, audit};

/// An account as lists show it (never its password hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    #[serde(with = "super::words::one")]
    pub role: UserRole,
}

/// The account a `user remove` removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removed {
    pub removed: String,
}

pub(super) fn add(
    engine: &mut Engine,
    ctx: &Context,
    name: String,
    role: UserRole,
    password: &str,
) -> Result<Account> {
    engine.store_mut().put_user(&name, role, password)?;
    audit(
        engine,
        ctx,
        "user.add",
        &format!("{name} ({})", role.as_str()),
    )?;
    Ok(Account { name, role })
}

pub(super) fn remove(engine: &mut Engine, ctx: &Context, name: String) -> Result<Removed> {
    let existed = engine.store_mut().remove_user(&name)?;
    if !existed {
        bail!("no user `{}`", keys::truncate_for_error(&name));
    }
    audit(engine, ctx, "user.remove", &name)?;
    Ok(Removed { removed: name })
}

pub(super) fn list(engine: &Engine) -> Result<Vec<Account>> {
    Ok(engine
        .store()
        .users()?
        .into_iter()
        .map(|u| Account {
            name: u.name,
            role: u.role,
        })
        .collect())
}
