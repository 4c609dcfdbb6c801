//! The command line (clap): the contract in DESIGN.md, and the dispatch to each command.
//! Each `cmd_*` file runs one group of commands; `table` and `status_view` print for them.

pub(crate) mod cmd_case;
pub(crate) mod cmd_fuzz;
pub(crate) mod cmd_hsds;
pub(crate) mod cmd_map;
pub(crate) mod cmd_mechanism;
pub(crate) mod cmd_node;
pub(crate) mod cmd_org;
pub(crate) mod cmd_report;
pub(crate) mod cmd_user;
pub(crate) mod status_view;
pub(crate) mod table;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use passerelle_core::event::{EraseReason, Urgency};
use passerelle_core::fold::Status;
use passerelle_core::keys::NodeId;
use passerelle_core::map::Capacity;
use passerelle_core::store::UserRole;

use crate::datadir::{self, DataDir, Passphrases};
use crate::rpc::words;

/// Passerelle: a referral mechanism between the organisations that assist migrants, with
/// ministry-signed configuration, end-to-end encrypted referrals and peer-to-peer sync.
/// `passerelle run --cache-mib` by default: the store's own default.
const CACHE_MIB_DEFAULT: u16 = 64;
const _: () =
    assert!(CACHE_MIB_DEFAULT as usize == passerelle_core::limits::STORE_CACHE_MIB_DEFAULT);

#[derive(Debug, Parser)]
#[command(name = "passerelle", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, shown under their own heading in each command's help.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The node's data directory (default: the platform data directory).
    #[arg(long, global = true, env = "PASSERELLE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A file whose first line is the passphrase of this node's secret key file
    /// (or set PASSERELLE_PASSPHRASE).
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// A file whose first line is the passphrase of the key file named on the command line
    /// (root key, organisation key; or set PASSERELLE_KEY_PASSPHRASE).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
    /// Who is acting, for the audit log (default: PASSERELLE_USER, else the system user).
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The ministry's side: root keys, the configuration document, signing and the chain.
    #[command(subcommand)]
    Mechanism(MechanismCmd),
    /// Create this node's identity (ed25519 key and age identity); prints its [[nodes]] stanza.
    Init {
        /// The organisation this node belongs to (its id in the configuration).
        #[arg(long)]
        org: String,
        /// A label for this node, such as medenine-laptop-1.
        #[arg(long)]
        label: String,
    },
    /// Print this node's id and age recipient, or its [[nodes]] stanza.
    Id {
        /// Print the [[nodes]] stanza for `org endorse`.
        #[arg(long)]
        toml: bool,
    },
    /// An organisation administrator's side: organisation keys and node endorsements.
    #[command(subcommand)]
    Org(OrgCmd),
    /// Make this node a member: check the signed configuration chain and keep it as the trust anchor.
    Join {
        /// The genesis (version 1) signed file, then any later versions in order.
        #[arg(required = true, value_name = "SIGNED")]
        files: Vec<PathBuf>,
    },
    /// Run the node: peer-to-peer sync, the local API and web UI. Stops on Ctrl-C or SIGTERM.
    Run(RunFlags),
    /// This node's configuration version and expiry, peers, what is pending, and warnings.
    Status {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Cases this node can read.
    #[command(subcommand)]
    Case(CaseCmd),
    /// Referrals: send them, list them, take them through their life.
    #[command(subcommand)]
    Referral(ReferralCmd),
    /// Who saw or exported personal data, and when.
    Audit {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// How many of the newest entries.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Write a consistent copy of this node's database.
    Backup {
        /// Where to write the backup.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Replace this node's database by a backup (the daemon must be stopped). The node stays
    /// read-only until it has learned its own latest events from a peer.
    Restore {
        /// The backup file to restore.
        file: PathBuf,
        /// Write at once, without waiting to hear from a peer (risks forking this node's log).
        #[arg(long)]
        accept_risk: bool,
    },
    /// Carry sync on a USB stick: export what a peer lacks, import what a peer sent.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// The partner map: profiles, search, posters, Open Referral export, gaps.
    #[command(subcommand)]
    Map(MapCmd),
    /// Web UI accounts of this node.
    #[command(subcommand)]
    User(UserCmd),
    /// The coordination report: referrals by category, partner and status, rates, time to
    /// acknowledge and accept against the SOP deadlines, overdue referrals, gaps, stale entries.
    Report {
        /// First day (YYYY-MM-DD or RFC 3339; default: 30 days ago).
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Day after the last (YYYY-MM-DD or RFC 3339; default: now).
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        /// table, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// A whole local mechanism on loopback: signed configuration, partner nodes, their map,
    /// scenario 3 moving through its lifecycle, a field site catching up by bundle.
    Demo {
        /// Stop when the scenario ends instead of running until Ctrl-C.
        #[arg(long)]
        exit: bool,
        /// An empty directory to keep the nodes in (default: a temporary one).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The performance figures, each beside a baseline measured in the same run.
    Bench {
        /// Smaller sizes: about a minute.
        #[arg(long)]
        quick: bool,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Run one section only: event-log, sync, map, report, retention or scale.
        #[arg(long, value_parser = ["event-log", "sync", "map", "report", "retention", "scale"])]
        only: Option<String>,
        /// The number of events the scale section fills a node's store with (at least 200,000;
        /// default 1,000,000, 200,000 with --quick).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(200_000..=100_000_000))]
        events: Option<u64>,
        /// The page cache of the scale section's store in MiB (4 to 16384; default the
        /// store's own, as `run --cache-mib`).
        #[arg(long, value_name = "MIB", default_value_t = CACHE_MIB_DEFAULT, value_parser = clap::value_parser!(u16).range(4..=16384))]
        cache_mib: u16,
    },
    /// Fuzz the decoders and fold inputs: run a target (or `all`, one after another) for a
    /// given time; crashing inputs are saved and the exit code is non-zero.
    Fuzz {
        /// The target, or `all` (see --list).
        #[arg(required_unless_present_any = ["list", "write_corpus"])]
        target: Option<String>,
        /// List the targets.
        #[arg(long)]
        list: bool,
        /// How long to run each target, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Stop each target after this many executions.
        #[arg(long, value_name = "N")]
        execs: Option<u64>,
        /// The random seed (default: a random one, printed): the same seed and corpus give
        /// the same inputs.
        #[arg(long, value_name = "S")]
        seed: Option<u64>,
        /// Seed corpus: a directory per target (DIR/TARGET/*); default: generated by the sim.
        #[arg(long, value_name = "DIR")]
        corpus: Option<PathBuf>,
        /// Where crashing, slow and hanging inputs are saved (DIR/TARGET/*.bin).
        #[arg(long, value_name = "DIR", default_value = "fuzz-crashes")]
        crashes: PathBuf,
        /// Write a seed corpus generated by the sim to DIR (a directory per target), and exit.
        #[arg(long, value_name = "DIR")]
        write_corpus: Option<PathBuf>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MechanismCmd {
    /// Create a ministry official's root signing key; prints the public key.
    Keygen {
        /// Where to write the new root key file (it must not exist).
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Write a complete, valid configuration document from the shipped sample mechanism.
    Template {
        /// The officials' public keys (ed25519:…), as printed by `mechanism keygen`.
        #[arg(long = "root-key", required = true, value_name = "PUB")]
        root_keys: Vec<String>,
        /// How many root keys must sign each version (default: all of them).
        #[arg(long)]
        threshold: Option<u32>,
        /// Where to write the configuration document.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a document (TOML) or add a signature to a signed file.
    Sign {
        /// mechanism.toml, or a .signed file to add signatures to.
        file: PathBuf,
        /// Root key files to sign with.
        #[arg(long = "key", required = true, value_name = "KEY")]
        keys: Vec<PathBuf>,
        /// Where to write the signed file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the next version's document: version + 1, previous hash, removal cut-offs.
    Next {
        /// The current version's signed file.
        current: PathBuf,
        /// A node to remove; its cut-off comes from this node's view, --cutoff, or a prompt.
        #[arg(long = "remove-node", value_name = "NODE_ID")]
        remove_nodes: Vec<String>,
        /// The last sequence number to accept from a removed node, as NODE_ID=SEQ.
        #[arg(long = "cutoff", value_name = "NODE_ID=SEQ")]
        cutoffs: Vec<String>,
        /// Where to write the next version's document.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check a chain of signed files, genesis first; exits non-zero with the reason.
    Verify {
        /// Signed configuration files, genesis first.
        #[arg(required = true, value_name = "SIGNED")]
        files: Vec<PathBuf>,
    },
    /// Show what a signed file says and who signed it.
    Show {
        /// A signed configuration file.
        file: PathBuf,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Apply newer versions to this node.
    Update {
        /// Signed configuration files, in version order (the ones this node holds may be left out).
        #[arg(required = true, value_name = "SIGNED")]
        files: Vec<PathBuf>,
    },
    /// Let this node create case events for a while although its configuration has expired
    /// (at most 72 hours; recorded in the audit log).
    OverrideExpiry {
        /// For how many hours (1 to 72).
        #[arg(long)]
        hours: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaseCmd {
    /// Open a case from a JSON file (person, needs, consent); prints the case id.
    Open {
        /// The case as JSON: case_type, site, person, needs, consent (see the README).
        #[arg(long, value_name = "CASE.json")]
        from: PathBuf,
    },
    /// The cases this node can read.
    List {
        /// Only cases whose data contains this text.
        #[arg(long)]
        search: Option<String>,
        /// At most N cases, the most recently active.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One case: the person, consent, timeline and referrals.
    Show {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Everything this node holds about the person of a case, printable, in their language:
    /// their information, every referral with what each partner received, their consent and
    /// its history. Audited.
    Export {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// Where to write the printable HTML page.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// fr, en or ar.
        #[arg(long, default_value = "fr", value_parser = ["fr", "en", "ar"])]
        lang: String,
    },
    /// Add a note to a case.
    Note {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// A note kept with the step (inside the ciphertext).
        #[arg(long)]
        note: String,
    },
    /// Hand case management to another organisation.
    Transfer {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// The organisation that becomes the case manager.
        #[arg(long, value_name = "ORG")]
        to: String,
        /// A note kept with the step (inside the ciphertext).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Close a case (case manager only).
    Close {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// A note kept with the step (inside the ciphertext).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reopen a closed case (case manager only).
    Reopen {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// A note kept with the step (inside the ciphertext).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Record that the person withdrew consent (for the partners and categories named, or for
    /// every referral): open referrals it covers are withdrawn, no new one it covers is valid
    /// anywhere, and what was shared under it is dropped on every node.
    WithdrawConsent {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// A partner the withdrawal covers (repeat it; none: every partner).
        #[arg(long = "org", value_name = "ORG")]
        orgs: Vec<String>,
        /// A service category it covers (repeat it; none: every category; never a sensitive one).
        #[arg(long = "category", value_name = "CATEGORY")]
        categories: Vec<String>,
    },
    /// Erase a case now (case manager only): every node that holds it drops the bodies of its
    /// events; the clear facts reports need stay. Recorded with its reason, and audited.
    Erase {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// person_asked, duplicate or error.
        #[arg(long, value_name = "REASON", value_parser = words::parse::<EraseReason>)]
        reason: EraseReason,
    },
    /// Record a status / case-type determination (by an authority the case type names).
    Determine {
        /// The case: its id, or the start of it as `case list` prints it.
        id: String,
        /// The case type determined (an id from the configuration's case types).
        #[arg(long = "case-type", value_name = "TYPE")]
        case_type: String,
        /// The person was found not to belong to the case type.
        #[arg(long)]
        not_confirmed: bool,
        /// A note kept with the step (inside the ciphertext).
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReferralCmd {
    /// Refer a case to a partner, sharing only the fields named; prints the referral id.
    Send {
        /// The case to refer: its id, or the start of it.
        #[arg(long)]
        case: String,
        /// The receiving organisation.
        #[arg(long, value_name = "ORG")]
        to: String,
        /// The service category.
        #[arg(long, value_name = "C")]
        category: String,
        /// emergency, urgent or routine.
        #[arg(long, value_name = "U", default_value = "routine", value_parser = words::parse::<Urgency>)]
        urgency: Urgency,
        /// The person's fields to share, comma-separated (first_name,age,languages,health…).
        #[arg(long, value_name = "FIELDS")]
        share: Vec<String>,
        /// A note for the other organisation (inside the ciphertext).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        /// Refer without recorded consent, with the reason (only roles the SOP allows).
        #[arg(long, value_name = "REASON")]
        emergency_override: Option<String>,
    },
    /// Referrals received (--inbox), sent (--outbox), or both.
    List {
        /// Only the referrals this organisation received.
        #[arg(long)]
        inbox: bool,
        /// Only the referrals this organisation sent.
        #[arg(long)]
        outbox: bool,
        /// Only referrals in this status (sent, acknowledged, accepted, declined, completed, withdrawn).
        #[arg(long, value_name = "S", value_parser = words::parse::<Status>)]
        status: Option<Status>,
        /// Only the referrals still waiting for the receiver (sent, acknowledged or accepted).
        #[arg(long, conflicts_with = "status")]
        open: bool,
        /// At most N referrals of each box, the newest.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One referral, with what was shared when this node may read it.
    Show {
        /// The referral: its id, or the start of it as `referral list` prints it.
        id: String,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge a received referral.
    Ack {
        /// The referral: its id, or the start of it as `referral list` prints it.
        id: String,
        /// A note for the other organisation (inside the ciphertext).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Accept a received referral.
    Accept {
        /// The referral: its id, or the start of it as `referral list` prints it.
        id: String,
        /// A note for the other organisation (inside the ciphertext).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Decline a received referral, with a reason code from the SOP.
    Decline {
        /// The referral: its id, or the start of it as `referral list` prints it.
        id: String,
        /// A decline reason id the SOP lists (`mechanism show` prints them).
        #[arg(long, value_name = "CODE")]
        reason: String,
        /// A note for the other organisation (inside the ciphertext).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Record that the service was delivered.
    Complete {
        /// The referral: its id, or the start of it as `referral list` prints it.
        id: String,
        /// A note for the other organisation (inside the ciphertext).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        /// What was delivered, for the sender's follow-up.
        #[arg(long, value_name = "TEXT")]
        outcome: Option<String>,
    },
    /// Withdraw a referral this organisation sent.
    Withdraw {
        /// The referral: its id, or the start of it as `referral list` prints it.
        id: String,
        /// A note for the other organisation (inside the ciphertext).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create (or replace) an account; prints a generated password unless one is given.
    Add {
        /// The account's name (what the person types to log in).
        name: String,
        /// caseworker, coordinator or admin.
        #[arg(long, value_parser = words::parse::<UserRole>)]
        role: UserRole,
        /// A file whose first line is the password (or set PASSERELLE_USER_PASSWORD).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Remove an account.
    Remove {
        /// The account's name.
        name: String,
    },
    /// List the accounts.
    List {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MapCmd {
    /// Set an organisation's profile from a file (the difference becomes one change): a
    /// Passerelle profile (TOML), or with --hsds an Open Referral HSDS 3.0 package.
    Import {
        /// A Passerelle profile (TOML; config/profiles/ has examples).
        #[arg(
            value_name = "PROFILE.toml",
            required_unless_present = "hsds",
            conflicts_with = "hsds"
        )]
        profile: Option<PathBuf>,
        /// An HSDS package: a directory (services_full.json, or the CSV tables of
        /// datapackage.json), or a compiled JSON file (a service, an organization, or arrays).
        #[arg(long, value_name = "DIR|FILE")]
        hsds: Option<PathBuf>,
        /// With --hsds: the organisation whose profile is set (default: this node's).
        #[arg(long, value_name = "ORG", requires = "hsds")]
        org: Option<String>,
        /// With --hsds: the HSDS id of the organization to take, when the package has several.
        #[arg(long = "hsds-org", value_name = "UUID", requires = "hsds")]
        hsds_org: Option<String>,
        /// With --hsds: the site of services whose location is none of the mechanism's.
        #[arg(long, value_name = "SITE", requires = "hsds")]
        site: Option<String>,
        /// With --hsds: the category of services whose taxonomy terms are none of the
        /// mechanism's.
        #[arg(long, value_name = "CATEGORY", requires = "hsds")]
        category: Option<String>,
        /// With --hsds: the language (ISO 639-1, like fr) of services that name none.
        #[arg(long, value_name = "L", requires = "hsds")]
        language: Option<String>,
        /// With --hsds: print the profile read (TOML) and import nothing.
        #[arg(long, requires = "hsds")]
        dry_run: bool,
    },
    /// Search the directory: open now first, then capacity, then the most recently verified.
    Search {
        /// Only services of this category (an id from the taxonomy).
        #[arg(long, value_name = "C")]
        category: Option<String>,
        /// Only services at this site (an id from the configuration).
        #[arg(long, value_name = "S")]
        site: Option<String>,
        /// A language spoken at the service (ISO 639-1, like ar).
        #[arg(long, value_name = "L")]
        language: Option<String>,
        /// Only services open now (in the site's local time).
        #[arg(long)]
        open_now: bool,
        /// available, limited, full or suspended.
        #[arg(long, value_name = "X", value_parser = words::parse::<Capacity>)]
        capacity: Option<Capacity>,
        /// Only this organisation's services.
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show profiles (all, or one organisation's).
    Show {
        /// Only this organisation's profile (default: every profile).
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Set a service's capacity (available, limited, full, suspended); marks it verified.
    Capacity {
        /// The service's id in this organisation's profile.
        service: String,
        /// available, limited, full or suspended.
        #[arg(value_parser = words::parse::<Capacity>)]
        capacity: Capacity,
        /// The organisation, when a coordinator edits one without nodes.
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
    },
    /// Mark a service verified today.
    Verify {
        /// The service's id in this organisation's profile.
        service: String,
        /// The organisation (default: this node's own).
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
    },
    /// Publish a compacted snapshot of a profile (fresh nodes then load it instead of every change).
    Snapshot {
        /// The organisation (default: this node's own).
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
    },
    /// Print-ready posters: a page per site (or one site), by service category.
    Poster {
        /// Only services at this site (an id from the configuration).
        #[arg(long, value_name = "S")]
        site: Option<String>,
        /// fr, en or ar (right to left).
        #[arg(long, default_value = "fr", value_parser = ["fr", "en", "ar"])]
        lang: String,
        /// a4 or a3.
        #[arg(long, default_value = "a4", value_parser = ["a4", "a3"])]
        size: String,
        /// Where to write the poster (HTML).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Export the directory as Open Referral HSDS 3.0: the tabular package (datapackage.json
    /// and its CSV tables) and the compiled services_full.json and organizations_full.json.
    Export {
        /// The format: hsds (the only one).
        #[arg(long, default_value = "hsds", value_parser = ["hsds"])]
        format: String,
        /// The directory to write the export into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// For each site and category, where no provider can take people now.
    Gaps {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Write what a peer lacks (--for NODE_ID), or everything, to one encrypted file.
    Export {
        /// Where to write the bundle file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The node the bundle is for (its id, from `passerelle id`).
        #[arg(long = "for", value_name = "NODE_ID")]
        for_node: Option<NodeId>,
    },
    /// Admit every event of a bundle, as sync would; importing twice changes nothing.
    Import {
        /// The bundle file to import.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCmd {
    /// Create an organisation's signing key and encryption epoch 1; prints the stanzas.
    Keygen {
        /// The organisation's id, as in the configuration.
        #[arg(long)]
        org: String,
        /// Where to write the organisation's key file (it must not exist).
        #[arg(long, value_name = "ORGKEY")]
        out: PathBuf,
    },
    /// Add the next encryption key epoch; prints its stanza.
    RotateKey {
        /// The organisation's key file.
        #[arg(value_name = "ORGKEY")]
        key: PathBuf,
    },
    /// Replace the signing key, endorsed by the current one; prints its stanza.
    RotateSigningKey {
        /// The organisation's key file.
        #[arg(value_name = "ORGKEY")]
        key: PathBuf,
    },
    /// Endorse a node of this organisation; prints its stanza for the ministry.
    Endorse {
        /// The node's stanza, as printed by `passerelle id --toml`.
        #[arg(value_name = "NODE.toml")]
        node: PathBuf,
        /// The organisation's key file.
        #[arg(long, value_name = "ORGKEY")]
        key: PathBuf,
        /// An address where the node can be reached (libp2p multiaddr); may repeat.
        #[arg(long = "address", value_name = "MULTIADDR")]
        addresses: Vec<String>,
    },
    /// Install the organisation's encryption epochs on this node by hand.
    ImportKey {
        /// The organisation's key file.
        #[arg(value_name = "ORGKEY")]
        key: PathBuf,
    },
}

/// `passerelle run`'s options.
#[derive(Debug, Args)]
pub struct RunFlags {
    /// Where to listen for peers (libp2p multiaddr); may repeat.
    /// Default: /ip4/0.0.0.0/tcp/4010 and /ip4/0.0.0.0/udp/4010/quic-v1.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// A peer to connect to (libp2p multiaddr, with or without /p2p/NODE_ID); may repeat.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// The local API and web UI address (default 127.0.0.1:4011; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Discover member nodes on the local network by mDNS (field LANs).
    #[arg(long)]
    pub mdns: bool,
    /// Relay connections between member nodes that cannot reach each other directly (run it
    /// on a node with a public address or a port forward, e.g. a regional office).
    #[arg(long)]
    pub relay: bool,
    /// Also serve the public directory alone — the read-only HSDS API under /hsds/, and
    /// nothing else of the node — on this address (e.g. 0.0.0.0:8080), for publishing the
    /// partner map beyond this machine.
    #[arg(long, value_name = "ADDR")]
    pub hsds_listen: Option<String>,
    /// The store's page cache in MiB (4 to 16384): what the daemon keeps of its database in
    /// memory, beyond which pages are read again from disk.
    #[arg(long, value_name = "MIB", default_value_t = CACHE_MIB_DEFAULT, value_parser = clap::value_parser!(u16).range(4..=16384))]
    pub cache_mib: u16,
}

impl From<RunFlags> for crate::daemon::Flags {
    fn from(f: RunFlags) -> Self {
        Self {
            listen: f.listen,
            peers: f.peers,
            api: f.api,
            mdns: f.mdns,
            relay: f.relay,
            hsds_listen: f.hsds_listen,
            cache_mib: usize::from(f.cache_mib),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let passphrases = Passphrases {
        node: datadir::passphrase(
            cli.global.passphrase_file.as_deref(),
            "PASSERELLE_PASSPHRASE",
        )?,
        key: datadir::passphrase(
            cli.global.key_passphrase_file.as_deref(),
            "PASSERELLE_KEY_PASSPHRASE",
        )?,
    };
    let data_dir = || DataDir::resolve(cli.global.data_dir.clone());
    let user = crate::client::user(cli.global.user.as_deref());
    match cli.command {
        Command::Mechanism(cmd) => cmd_mechanism::run(cmd, data_dir, &passphrases, &user),
        Command::Init { org, label } => cmd_node::init(&data_dir()?, &org, &label, &passphrases),
        Command::Id { toml } => cmd_node::id(&data_dir()?, toml),
        Command::Org(cmd) => cmd_org::run(cmd, data_dir, &passphrases, &user),
        Command::Join { files } => cmd_node::join(&data_dir()?, &files, &passphrases, &user),
        Command::Status { json } => cmd_node::status(&data_dir()?, &passphrases, &user, json),
        Command::Run(flags) => crate::daemon::run_blocking(data_dir()?, passphrases, flags.into()),
        Command::Case(cmd) => cmd_case::case(cmd, &data_dir()?, &passphrases, &user),
        Command::Referral(cmd) => cmd_case::referral(cmd, &data_dir()?, &passphrases, &user),
        Command::Audit { json, limit } => {
            cmd_case::audit(&data_dir()?, &passphrases, &user, json, limit)
        }
        Command::Backup { out } => cmd_case::backup(&data_dir()?, &passphrases, &user, &out),
        Command::Restore { file, accept_risk } => {
            cmd_case::restore(&data_dir()?, &file, accept_risk)
        }
        Command::Bundle(cmd) => cmd_case::bundle(cmd, &data_dir()?, &passphrases, &user),
        Command::Map(cmd) => cmd_map::run(cmd, &data_dir()?, &passphrases, &user),
        Command::User(cmd) => cmd_user::run(cmd, &data_dir()?, &passphrases, &user),
        Command::Report { from, to, format } => {
            cmd_report::run(&data_dir()?, &passphrases, &user, from, to, &format)
        }
        Command::Bench {
            quick,
            json,
            only,
            events,
            cache_mib,
        } => crate::bench::run(quick, json, only.as_deref(), events, usize::from(cache_mib)),
        Command::Demo { exit, dir } => crate::demo::run(dir, exit),
        Command::Fuzz {
            target,
            list,
            seconds,
            execs,
            seed,
            corpus,
            crashes,
            write_corpus,
            json,
        } => cmd_fuzz::run(cmd_fuzz::Options {
            target,
            list,
            seconds,
            execs,
            seed,
            corpus,
            crashes,
            write_corpus,
            json,
        }),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command says what it is: `--help` leaves none undescribed.
    #[test]
    fn every_argument_is_described_in_the_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "passerelle", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }
}
