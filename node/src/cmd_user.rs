//! `passerelle user …`: the web UI's accounts on this node.

use age::secrecy::ExposeSecret;
use anyhow::Result;
use rand::RngCore;

use crate::cli::UserCmd;
use crate::client;
use crate::datadir::{self, DataDir, Passphrases};
use crate::rpc::Request;
use crate::rpc::users::{Account, Removed};
use crate::table::{self, say};

/// A generated password: 16 characters from an alphabet without look-alikes.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

pub fn run(cmd: UserCmd, dir: &DataDir, pass: &Passphrases, user: &str) -> Result<()> {
    match cmd {
        UserCmd::Add {
            name,
            role,
            password_file,
        } => {
            let given = datadir::passphrase(password_file.as_deref(), "PASSERELLE_USER_PASSWORD")?;
            let (password, generated) = match given {
                Some(p) => (p.expose_secret().to_string(), false),
                None => (generate_password(), true),
            };
            client::call::<Account>(
                dir,
                pass,
                user,
                Request::UserAdd {
                    name: name.clone(),
                    role,
                    password: password.clone(),
                },
            )?;
            let role = role.as_str();
            if generated {
                println!("{password}");
                eprintln!("Account `{name}` ({role}) created; its password is above (shown once).");
            } else {
                eprintln!("Account `{name}` ({role}) created.");
            }
        }
        UserCmd::Remove { name } => {
            client::call::<Removed>(dir, pass, user, Request::UserRemove { name: name.clone() })?;
            say!("Account `{name}` removed.");
        }
        UserCmd::List { json } => {
            let out: Vec<Account> = client::call(dir, pass, user, Request::UserList)?;
            if json {
                crate::cmd_case::print_json(&out)?;
            } else {
                let rows: Vec<Vec<String>> = out
                    .iter()
                    .map(|u| vec![u.name.clone(), u.role.as_str().to_string()])
                    .collect();
                print!("{}", table::render(&["USER", "ROLE"], &rows));
            }
        }
    }
    Ok(())
}
