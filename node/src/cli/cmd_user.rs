//! `passerelle user …`: the web UI's accounts on this node.

use age::secrecy::ExposeSecret;
use anyhow::Result;

use crate::cli::UserCmd;
use crate::cli::table::{self, say};
use crate::client;
use crate::datadir::{self, DataDir, Passphrases};
use crate::rpc::Request;
use crate::rpc::users::{Account, Removed};
use crate::util;

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
                None => (util::generate_password(), true),
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
                crate::cli::cmd_case::print_json(&out)?;
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
